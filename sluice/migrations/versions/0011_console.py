"""what the operator console reads and records: reconcile runs, idempotent actions, which key
verified a delivery, its repeats, webhook answers per minute, and the indexes its filters need

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    # Every reconcile, from the CronJob, the CLI or the console: what it scanned and found.
    op.create_table(
        "reconcile_runs",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("started_at", _TS, nullable=False),
        sa.Column("finished_at", _TS, server_default=sa.func.now(), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("summary", JSONB(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_reconcile_runs"),
    )
    # A console action carries the key of the form it came from: a repeated submit finds the
    # key taken and does nothing a second time.
    op.add_column("audit_log", sa.Column("request_key", sa.Text()))
    op.create_index(
        "uq_audit_log_request_key",
        "audit_log",
        ["request_key"],
        unique=True,
        postgresql_where=sa.text("request_key IS NOT NULL"),
    )
    # Which configured key verified a delivery (a fingerprint, never the key itself).
    op.add_column("inbound_events", sa.Column("signature_key", sa.Text()))
    # Deliveries of an event already stored: each repeat's headers, for its journey.
    op.create_table(
        "delivery_repeats",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("event_id", UUID(as_uuid=True), nullable=False),
        sa.Column("received_at", _TS, server_default=sa.func.now(), nullable=False),
        sa.Column("headers", JSONB(), nullable=False),
        sa.Column("signature_key", sa.Text()),
        sa.PrimaryKeyConstraint("id", name="pk_delivery_repeats"),
    )
    op.create_index("ix_delivery_repeats_event_id", "delivery_repeats", ["event_id"])
    # Every webhook answer (accepted, duplicate, or why it was refused), counted per minute, for
    # the console's overview: nothing of a refused request is stored, only that it came. Each
    # ingest process adds its counts every few seconds, so a flood costs one row per reason and
    # minute, and the overview reads a day as at most 1,440 rows per reason, at any volume.
    op.create_table(
        "webhook_answers",
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("minute", _TS, nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("minute", "source", "reason", name="pk_webhook_answers"),
    )
    # The console lists events by outcome, newest first. Applied is most events, so a scan of
    # the newest finds a page at once; the others are few and read newest first from these.
    op.create_index(
        "ix_consumer_dedupe_stale",
        "consumer_dedupe",
        ["applied_at"],
        postgresql_where=sa.text("outcome = 'stale'"),
    )
    op.create_index(
        "ix_event_outcomes_outcome_recorded_at", "event_outcomes", ["outcome", "recorded_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_event_outcomes_outcome_recorded_at", table_name="event_outcomes")
    op.drop_index("ix_consumer_dedupe_stale", table_name="consumer_dedupe")
    op.drop_table("webhook_answers")
    op.drop_table("delivery_repeats")
    op.drop_column("inbound_events", "signature_key")
    op.drop_index("uq_audit_log_request_key", table_name="audit_log")
    op.drop_column("audit_log", "request_key")
    op.drop_table("reconcile_runs")
