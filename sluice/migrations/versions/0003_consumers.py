"""consumers: the jobs projection, its customer cache, dedupe records and dead letters

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _created_at() -> sa.Column[object]:
    return sa.Column(
        "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
    )


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("booking_id", sa.Text(), nullable=False),
        # source-owned: written only by the jobs consumer, from Square
        sa.Column("status", sa.Text(), nullable=True),
        sa.Column("start_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("duration_minutes", sa.Integer(), nullable=True),
        sa.Column("service_variation_ids", postgresql.JSONB(), nullable=True),
        sa.Column("team_member_id", sa.Text(), nullable=True),
        sa.Column("location_id", sa.Text(), nullable=True),
        sa.Column("customer_id", sa.Text(), nullable=True),
        sa.Column("customer_name", sa.Text(), nullable=True),
        sa.Column("customer_email", sa.Text(), nullable=True),
        sa.Column("customer_phone", sa.Text(), nullable=True),
        sa.Column("booking_version", sa.BigInteger(), nullable=True),
        sa.Column("source_updated_at", sa.DateTime(timezone=True), nullable=True),
        # app-owned: staff work, never written by a consumer
        sa.Column("work_status", sa.Text(), server_default="scheduled", nullable=False),
        sa.Column("checklist", postgresql.JSONB(), server_default="[]", nullable=False),
        sa.Column("status_history", postgresql.JSONB(), server_default="[]", nullable=False),
        sa.Column("photos_meta", postgresql.JSONB(), server_default="[]", nullable=False),
        sa.Column("receipt_photos", postgresql.JSONB(), server_default="[]", nullable=False),
        sa.Column("post_completion_issue", sa.Text(), nullable=True),
        sa.Column("payment", postgresql.JSONB(), nullable=True),
        sa.Column("vehicle_info", postgresql.JSONB(), nullable=True),
        sa.Column("notes", sa.Text(), nullable=True),
        _created_at(),
        sa.PrimaryKeyConstraint("booking_id", name="pk_jobs"),
    )
    op.create_index("ix_jobs_start_at", "jobs", ["start_at"])
    op.create_index("ix_jobs_customer_id", "jobs", ["customer_id"])
    op.create_table(
        "square_customers",
        sa.Column("customer_id", sa.Text(), nullable=False),
        sa.Column("display_name", sa.Text(), nullable=True),
        sa.Column("email_address", sa.Text(), nullable=True),
        sa.Column("phone_number", sa.Text(), nullable=True),
        sa.Column("version", sa.BigInteger(), nullable=True),
        sa.Column("source_updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("merged_into", sa.Text(), nullable=True),
        _created_at(),
        sa.PrimaryKeyConstraint("customer_id", name="pk_square_customers"),
    )
    op.create_table(
        "consumer_dedupe",
        sa.Column("consumer", sa.Text(), nullable=False),
        sa.Column("event_id", sa.Text(), nullable=False),
        sa.Column(
            "applied_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("consumer", "event_id", name="pk_consumer_dedupe"),
    )
    op.create_table(
        "dead_letters",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("consumer", sa.Text(), nullable=False),
        sa.Column("topic", sa.Text(), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("offset", sa.BigInteger(), nullable=False),
        sa.Column("key", sa.LargeBinary(), nullable=True),
        sa.Column("value", sa.LargeBinary(), nullable=True),
        sa.Column("headers", postgresql.JSONB(), nullable=False),
        sa.Column("event_id", sa.Text(), nullable=True),
        sa.Column("error_type", sa.Text(), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        _created_at(),
        sa.PrimaryKeyConstraint("id", name="pk_dead_letters"),
        sa.UniqueConstraint(
            "consumer",
            "topic",
            "partition",
            "offset",
            name="uq_dead_letters_consumer_topic_partition_offset",
        ),
    )


def downgrade() -> None:
    op.drop_table("dead_letters")
    op.drop_table("consumer_dedupe")
    op.drop_table("square_customers")
    op.drop_index("ix_jobs_customer_id", table_name="jobs")
    op.drop_index("ix_jobs_start_at", table_name="jobs")
    op.drop_table("jobs")
