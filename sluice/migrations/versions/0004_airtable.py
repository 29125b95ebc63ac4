"""airtable: webhook registry with payload cursors, and the leads projection

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def _timestamps() -> list[sa.Column[object]]:
    return [
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
    ]


def upgrade() -> None:
    op.create_table(
        "airtable_webhooks",
        sa.Column("webhook_id", sa.Text(), nullable=False),
        sa.Column("base_id", sa.Text(), nullable=False),
        sa.Column("cursor", sa.BigInteger(), server_default="1", nullable=False),
        sa.Column("notification_url", sa.Text(), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("refreshed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_fetched_at", sa.DateTime(timezone=True), nullable=True),
        *_timestamps(),
        sa.PrimaryKeyConstraint("webhook_id", name="pk_airtable_webhooks"),
        sa.CheckConstraint("cursor >= 1", name="ck_airtable_webhooks_cursor_positive"),
    )
    op.create_table(
        "leads",
        sa.Column("record_id", sa.Text(), nullable=False),
        sa.Column("base_id", sa.Text(), nullable=False),
        sa.Column("table_id", sa.Text(), nullable=False),
        # source-owned: written from Airtable
        sa.Column("full_name", sa.Text(), nullable=True),
        sa.Column("first_name", sa.Text(), nullable=True),
        sa.Column("last_name", sa.Text(), nullable=True),
        sa.Column("email", sa.Text(), nullable=True),
        sa.Column("phone", sa.Text(), nullable=True),
        sa.Column("company", sa.Text(), nullable=True),
        sa.Column("job_title", sa.Text(), nullable=True),
        sa.Column("city", sa.Text(), nullable=True),
        sa.Column("state", sa.Text(), nullable=True),
        sa.Column("lead_source", sa.Text(), nullable=True),
        sa.Column("campaign", sa.Text(), nullable=True),
        sa.Column("lead_status", sa.Text(), nullable=True),
        sa.Column("sms_sequence_position", sa.Integer(), nullable=True),
        sa.Column("sms_sent_count", sa.Integer(), nullable=True),
        sa.Column("last_sms_sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("opted_out", sa.Boolean(), nullable=True),
        sa.Column("airtable_created_at", sa.DateTime(timezone=True), nullable=True),
        # app-owned: staff work, never written from Airtable
        sa.Column("claimed_by", sa.Text(), nullable=True),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("notes", sa.Text(), nullable=True),
        # ordering: the newest Airtable base transaction applied to the row
        sa.Column("airtable_txn", sa.BigInteger(), nullable=True),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("record_id", name="pk_leads"),
    )
    op.create_index("ix_leads_email", "leads", ["email"])
    op.create_index("ix_leads_claimed_by", "leads", ["claimed_by"])


def downgrade() -> None:
    op.drop_index("ix_leads_claimed_by", table_name="leads")
    op.drop_index("ix_leads_email", table_name="leads")
    op.drop_table("leads")
    op.drop_table("airtable_webhooks")
