"""the event store partitioned by week of receipt, and dedupe keys in a table of their own

The existing table becomes the store's first partition, `inbound_events_before_<monday>`, holding
everything received before next Monday; weeks from then on are partitions of their own, and a
default partition catches anything no week covers (schemas/event_partitions.py).

A unique index on a partitioned table must include the partition key, and a redelivery arrives at
another time than the first delivery, so dedupe moves to `event_keys`: one row per (source,
provider event id), written in the same statement as the event (ingest/record.py) and kept at
least the event retention plus the provider's redelivery horizon (ingest/partitions.py).

Cost on an existing store, all inside the migration's transaction (ingest waits, then resumes):
copying every key into event_keys, one scan to attach the table as a partition, and one index
build on `id`. The README's upgrade section gives the figures and the procedure for large stores.

Revision ID: 0016
Revises: 0015
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from alembic import op

from schemas.event_partitions import (
    PARTITION_DAYS,
    TABLE,
    WEEKS_AHEAD,
    before_partition,
    create_default,
    create_week,
    week_start,
)

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


_SOURCE_RECEIVED_AT = (
    f"CREATE INDEX ix_inbound_events_source_received_at ON {TABLE} (source, received_at)"
)


def upgrade() -> None:
    first_week = week_start(datetime.now(UTC)) + timedelta(days=PARTITION_DAYS)
    before = before_partition(first_week)
    op.execute(f"ALTER TABLE {TABLE} RENAME TO {before}")
    op.execute(f"ALTER TABLE {before} RENAME CONSTRAINT pk_inbound_events TO {before}_pkey")
    op.execute(f"ALTER INDEX ix_inbound_events_source_received_at RENAME TO {before}_sr_idx")

    op.execute(
        """
        CREATE TABLE event_keys (
            source text NOT NULL,
            provider_event_id text NOT NULL,
            event_id uuid NOT NULL,
            received_at timestamptz NOT NULL,
            CONSTRAINT pk_event_keys PRIMARY KEY (source, provider_event_id)
        )
        """
    )
    # Keys are appended in receipt order: a block-range index finds the old ones for pruning at
    # almost no cost to each insert.
    op.execute("CREATE INDEX ix_event_keys_received_at ON event_keys USING brin (received_at)")
    copy_keys = "INSERT INTO event_keys SELECT source, provider_event_id, id, received_at FROM "
    op.execute(copy_keys + before)
    op.execute(f"ALTER TABLE {before} DROP CONSTRAINT uq_inbound_events_source_provider_event_id")

    op.execute(
        f"CREATE TABLE {TABLE} (LIKE {before} INCLUDING DEFAULTS) PARTITION BY RANGE (received_at)"
    )
    op.execute(f"CREATE INDEX ix_inbound_events_id ON {TABLE} (id)")
    op.execute(_SOURCE_RECEIVED_AT)
    op.execute(
        f"ALTER TABLE {TABLE} ATTACH PARTITION {before}"
        f" FOR VALUES FROM (MINVALUE) TO ('{first_week.isoformat()}')"
    )
    # The partition's index on id (built by the attach) serves what the primary key did.
    op.execute(f"ALTER TABLE {before} DROP CONSTRAINT {before}_pkey")
    op.execute(create_default())
    for week in range(WEEKS_AHEAD + 1):
        op.execute(create_week(first_week + timedelta(days=PARTITION_DAYS * week)))

    # Repeats go with their events' retention; appended in receipt order, like the keys.
    op.execute(
        "CREATE INDEX ix_delivery_repeats_received_at ON delivery_repeats USING brin (received_at)"
    )


def downgrade() -> None:
    op.execute("DROP INDEX ix_delivery_repeats_received_at")
    op.execute(f"CREATE TABLE {TABLE}_flat (LIKE {TABLE} INCLUDING DEFAULTS)")
    op.execute(f"INSERT INTO {TABLE}_flat SELECT * FROM {TABLE}")  # noqa: S608
    op.execute(f"DROP TABLE {TABLE}")
    op.execute(f"ALTER TABLE {TABLE}_flat RENAME TO {TABLE}")
    op.execute(f"ALTER TABLE {TABLE} ADD CONSTRAINT pk_inbound_events PRIMARY KEY (id)")
    op.execute(
        f"ALTER TABLE {TABLE} ADD CONSTRAINT uq_inbound_events_source_provider_event_id"
        " UNIQUE (source, provider_event_id)"
    )
    op.execute(_SOURCE_RECEIVED_AT)
    op.execute("DROP TABLE event_keys")
