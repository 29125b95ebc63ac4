"""How the event store (`inbound_events`) is partitioned: by `received_at`, one partition per
ISO week (Monday 00:00 UTC to the next), so retention drops whole weeks and a week's events share
their indexes.

Beside the weeks are two partitions that are never dropped by age alone: `inbound_events_before_*`
holds everything received before the first week (the whole store of a database that was converted
by migration 0016), and `inbound_events_default` holds a row no week covers (a week not created
yet), so no event is ever refused for want of a partition. ingest/partitions.py creates the weeks
ahead and moves any rows the default partition caught into their week.

Dedupe does not live here: a unique index on a partitioned table must include the partition key,
and a redelivery is received at another time. `event_keys` (migration 0016) holds one row per
(source, provider event id), kept longer than the events (see ingest/partitions.py).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from schemas import airtable, square

TABLE = "inbound_events"
DEFAULT_PARTITION = f"{TABLE}_default"
PARTITION_DAYS = 7
# Weeks kept created ahead of the current one: the store keeps working that long even if
# nothing maintains it (the default partition takes over after that).
WEEKS_AHEAD = 4

# How long after an event its provider may bring it again: a key is kept this much longer than
# the event retention, so dedupe stays exact past it.
REDELIVERY_HORIZONS = {
    square.SOURCE: square.REDELIVERY_HORIZON,
    airtable.SOURCE: airtable.REDELIVERY_HORIZON,
}
# The least event retention: every event Square's event search (recovery) can bring back is
# then still stored, so it is found a duplicate.
MIN_RETENTION_DAYS = square.EVENTS_HORIZON.days
MAX_RETENTION_DAYS = 3650


def week_start(moment: datetime) -> datetime:
    """The Monday 00:00 UTC that starts the week of `moment`."""
    day = moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return day - timedelta(days=day.weekday())


def week_partition(start: datetime) -> str:
    return f"{TABLE}_{start:%Y_%m_%d}"


def before_partition(upper: datetime) -> str:
    return f"{TABLE}_before_{upper:%Y_%m_%d}"


def _literal(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


def create_week(start: datetime) -> str:
    """DDL for the week starting `start` (a Monday 00:00 UTC)."""
    end = start + timedelta(days=PARTITION_DAYS)
    return (
        f"CREATE TABLE {week_partition(start)} PARTITION OF {TABLE}"
        f" FOR VALUES FROM ('{_literal(start)}') TO ('{_literal(end)}')"
    )


def create_before(upper: datetime) -> str:
    return (
        f"CREATE TABLE {before_partition(upper)} PARTITION OF {TABLE}"
        f" FOR VALUES FROM (MINVALUE) TO ('{_literal(upper)}')"
    )


def create_default() -> str:
    return f"CREATE TABLE {DEFAULT_PARTITION} PARTITION OF {TABLE} DEFAULT"
