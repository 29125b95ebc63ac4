"""a write-back conflict stays open until staff resolve it: who resolved it, when, and which
value was kept

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("sync_conflicts", sa.Column("resolved_at", sa.DateTime(timezone=True)))
    op.add_column("sync_conflicts", sa.Column("resolved_by", sa.Text()))
    # "app": the app's value was kept and pushed again; "airtable": Airtable's was adopted.
    op.add_column("sync_conflicts", sa.Column("resolution", sa.Text()))
    op.create_check_constraint(
        "ck_sync_conflicts_resolution",
        "sync_conflicts",
        "resolution IS NULL OR resolution IN ('app', 'airtable')",
    )
    # A lead with an open conflict is neither synced nor pending: it says so.
    op.drop_constraint("ck_lead_sync_ck_lead_sync_status_known", "lead_sync")
    op.create_check_constraint(
        "ck_lead_sync_status_known",
        "lead_sync",
        "status IN ('pending', 'synced', 'conflict', 'failed')",
    )
    # The open ones: what a lead's sync status and the pusher look up.
    op.create_index(
        "ix_sync_conflicts_open",
        "sync_conflicts",
        ["record_id", "column_name"],
        postgresql_where=sa.text("resolved_at IS NULL"),
    )


def downgrade() -> None:
    op.execute("UPDATE lead_sync SET status = 'synced' WHERE status = 'conflict'")
    op.drop_constraint("ck_lead_sync_ck_lead_sync_status_known", "lead_sync")
    op.create_check_constraint(
        "ck_lead_sync_status_known", "lead_sync", "status IN ('pending', 'synced', 'failed')"
    )
    op.drop_index("ix_sync_conflicts_open", table_name="sync_conflicts")
    op.drop_constraint("ck_sync_conflicts_resolution", "sync_conflicts")
    for column in ("resolution", "resolved_by", "resolved_at"):
        op.drop_column("sync_conflicts", column)
