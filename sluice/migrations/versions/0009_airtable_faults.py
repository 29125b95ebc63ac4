"""what Airtable's payloads reported and what sluice could not store: webhook errors, destroyed
tables, and cells refused by their column

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column("airtable_webhooks", sa.Column("last_error_code", sa.Text()))
    op.add_column("airtable_webhooks", sa.Column("last_error_at", _TS))
    op.add_column(
        "airtable_webhooks",
        sa.Column(
            "destroyed_table_ids",
            ARRAY(sa.Text()),
            server_default=sa.text("'{}'"),
            nullable=False,
        ),
    )
    op.create_table(
        "skipped_cells",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("projection", sa.Text(), nullable=False),
        sa.Column("row_key", sa.Text(), nullable=False),
        sa.Column("provider_event_id", sa.Text(), nullable=False),
        sa.Column("field_id", sa.Text(), nullable=False),
        sa.Column("column_name", sa.Text(), nullable=False),
        # JSON text rather than jsonb: the value may hold what jsonb cannot (a NUL).
        sa.Column("value_json", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("skipped_at", _TS, server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_skipped_cells"),
    )
    op.create_index("ix_skipped_cells_row_key", "skipped_cells", ["row_key"])


def downgrade() -> None:
    op.drop_table("skipped_cells")
    op.drop_column("airtable_webhooks", "destroyed_table_ids")
    op.drop_column("airtable_webhooks", "last_error_at")
    op.drop_column("airtable_webhooks", "last_error_code")
