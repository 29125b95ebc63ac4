"""what each consumer group did with each event (the second half of an event's journey),
discarded dead letters, the audit log of operator actions, and paused components

An applied or stale event's outcome is kept in its dedupe record, which every consumer writes
anyway; duplicates, ignored and dead-lettered messages get an event_outcomes row
(consumers/journey.py). Both are found by the event's id or by the entity it is about (the
message key). Outcomes are appended in recorded_at order, so a block-range index serves pruning.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    # Adding columns with a constant default or none rewrites nothing (PostgreSQL 11+).
    for column in (
        sa.Column("outcome", sa.Text(), server_default="applied", nullable=False),
        sa.Column("origin", sa.Text()),
        sa.Column("topic", sa.Text()),
        sa.Column("partition", sa.Integer()),
        sa.Column("offset", sa.BigInteger()),
        sa.Column("entity_key", sa.Text()),
        sa.Column("published_at", _TS),
        sa.Column("detail", JSONB()),
    ):
        op.add_column("consumer_dedupe", column)
    op.create_index("ix_consumer_dedupe_entity_key", "consumer_dedupe", ["entity_key"])
    op.create_table(
        "event_outcomes",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("event_id", sa.Text()),
        sa.Column("consumer", sa.Text(), nullable=False),
        sa.Column("outcome", sa.Text(), nullable=False),
        # delivered, reconcile or redrive: schemas/origins.py
        sa.Column("origin", sa.Text(), nullable=False),
        sa.Column("topic", sa.Text(), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("offset", sa.BigInteger(), nullable=False),
        sa.Column("entity_key", sa.Text()),
        sa.Column("published_at", _TS),
        sa.Column("detail", JSONB()),
        sa.Column("recorded_at", _TS, server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_event_outcomes"),
        sa.CheckConstraint(
            "outcome IN ('duplicate', 'ignored', 'dead_lettered')",
            name="outcome",
        ),
    )
    op.create_index("ix_event_outcomes_event_id", "event_outcomes", ["event_id"])
    op.execute(
        "CREATE INDEX ix_event_outcomes_recorded_at ON event_outcomes USING brin (recorded_at)"
    )
    # Searched by entity: the message key is the booking, customer or Airtable record id.
    op.create_index("ix_event_outcomes_entity_key", "event_outcomes", ["entity_key"])

    # A dead letter can be discarded, with a reason, instead of redriven; both say by whom.
    op.add_column("dead_letters", sa.Column("redriven_by", sa.Text()))
    op.add_column("dead_letters", sa.Column("discarded_at", _TS))
    op.add_column("dead_letters", sa.Column("discarded_by", sa.Text()))
    op.add_column("dead_letters", sa.Column("discard_reason", sa.Text()))
    # Every operator action (redrive, discard, ...): who, when, on what, and what came of it.
    op.create_table(
        "audit_log",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("at", _TS, server_default=sa.func.now(), nullable=False),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("target", sa.Text(), nullable=False),
        sa.Column("detail", JSONB()),
        sa.PrimaryKeyConstraint("id", name="pk_audit_log"),
    )
    op.create_index("ix_dead_letters_event_id", "dead_letters", ["event_id"])
    # A component an operator paused (sluice pause): `relay` or `consumer:<name>`.
    op.create_table(
        "pauses",
        sa.Column("component", sa.Text(), nullable=False),
        sa.Column("paused_at", _TS, server_default=sa.func.now(), nullable=False),
        sa.Column("paused_by", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text()),
        sa.PrimaryKeyConstraint("component", name="pk_pauses"),
    )


def downgrade() -> None:
    op.drop_table("pauses")
    op.drop_index("ix_dead_letters_event_id", table_name="dead_letters")
    op.drop_table("audit_log")
    for column in ("discard_reason", "discarded_by", "discarded_at", "redriven_by"):
        op.drop_column("dead_letters", column)
    op.drop_table("event_outcomes")
    op.drop_index("ix_consumer_dedupe_entity_key", table_name="consumer_dedupe")
    for name in (
        "detail",
        "published_at",
        "entity_key",
        "offset",
        "partition",
        "topic",
        "origin",
        "outcome",
    ):
        op.drop_column("consumer_dedupe", name)
