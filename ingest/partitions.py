"""Upkeep of the event store: weeks created ahead, old weeks dropped, old dedupe keys pruned.

Every ingest process runs it at start and then hourly, one process at a time (an advisory
lock); `sluice store upkeep` runs it once. What it keeps:

- **Weeks ahead.** The current week and `WEEKS_AHEAD` more exist as partitions. A row no week
  covers lands in the default partition, and the next upkeep moves it into its week.
- **Events**: a week is dropped (one `DROP TABLE`, no row-by-row delete) once its end is
  `SLUICE_EVENT_RETENTION_DAYS` old, so an event is kept that long and at most a week more; 0
  keeps every week.
- **Dedupe keys** (`event_keys`): kept as long as their event can be (the retention and a
  week) plus the source's redelivery horizon (schemas/event_partitions.REDELIVERY_HORIZONS), so
  every event still stored, and every redelivery the provider can still send after its week was
  dropped, is found a duplicate.
- **Delivery repeats** go with their events' retention.

Each DDL statement waits at most `LOCK_TIMEOUT` for its lock: a partition is created or dropped
under a brief lock on the whole table, and a long query must not make deliveries queue behind
it. A statement that times out is tried again at the next upkeep.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import structlog
from sqlalchemy import text

from schemas.event_partitions import (
    DEFAULT_PARTITION,
    PARTITION_DAYS,
    REDELIVERY_HORIZONS,
    TABLE,
    WEEKS_AHEAD,
    week_partition,
    week_start,
)
from sluice.db import autocommit, transaction
from sluice.prune import batched_delete, delete_in_batches, keep_pruning

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

log = structlog.get_logger(__name__)

LOCK_TIMEOUT = "2s"
# pg_try_advisory_lock(namespace, key): one upkeep at a time across ingest processes.
_LOCK = "SELECT pg_try_advisory_lock(hashtext('sluice'), hashtext('event-store-upkeep'))"
_UNLOCK = "SELECT pg_advisory_unlock(hashtext('sluice'), hashtext('event-store-upkeep'))"

_PARTITIONS = text(
    f"""
    SELECT c.relname, pg_get_expr(c.relpartbound, c.oid), pg_total_relation_size(c.oid)
    FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid
    WHERE i.inhparent = '{TABLE}'::regclass
    """  # noqa: S608 - a constant
)
_BOUND = re.compile(r"FROM \((?:'([^']+)'|MINVALUE)\) TO \((?:'([^']+)'|MAXVALUE)\)")
_PRUNE_KEYS = batched_delete(
    "event_keys", "source = %(source)s AND received_at < now() - %(keep)s::interval"
)
# Rows the default partition caught for a week, moved into the week's own table.
_MOVE = (
    f"WITH moved AS (DELETE FROM {DEFAULT_PARTITION}"  # noqa: S608 - our own names
    " WHERE received_at >= :start AND received_at < :end RETURNING *)"
    " INSERT INTO {name} SELECT * FROM moved"
)
_PRUNE_REPEATS = batched_delete("delivery_repeats", "received_at < now() - %(keep)s::interval")


@dataclass(frozen=True, slots=True)
class Partition:
    name: str
    lower: datetime | None  # None: from the beginning of time
    upper: datetime | None  # None: the default partition
    bytes: int  # with its indexes and TOAST

    @property
    def default(self) -> bool:
        return self.upper is None and self.lower is None


@dataclass(slots=True)
class Upkeep:
    created: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    moved_from_default: int = 0
    keys_pruned: int = 0
    repeats_pruned: int = 0
    skipped: bool = False  # another process held the upkeep lock


def _moment(literal: str | None) -> datetime | None:
    return None if literal is None else datetime.fromisoformat(literal)


async def partitions(conn: AsyncConnection) -> list[Partition]:
    """The store's partitions, oldest first, the default last."""
    found = []
    for name, bound, size in await conn.execute(_PARTITIONS):
        match = _BOUND.search(bound)
        lower, upper = (None, None) if match is None else match.groups()
        found.append(Partition(name, _moment(lower), _moment(upper), size))
    far = datetime.max.replace(tzinfo=UTC)
    return sorted(found, key=lambda p: (p.default, p.upper or far))


async def upkeep(
    engine: AsyncEngine, retention_days: int, *, now: datetime | None = None
) -> Upkeep:
    """Create the weeks ahead, drop the expired ones, prune old keys and repeats (see the module
    docstring). `now` is for tests and benchmarks that age a store."""
    now = now or datetime.now(UTC)
    done = Upkeep()
    async with autocommit(engine) as lock:
        if not (await lock.execute(text(_LOCK))).scalar_one():
            done.skipped = True
            return done
        try:
            await _create_weeks(engine, now, done)
            if retention_days:
                await _drop_expired(engine, now - timedelta(days=retention_days), done)
                await _prune(engine, now, timedelta(days=retention_days), done)
        finally:
            await lock.execute(text(_UNLOCK))
    return done


async def _create_weeks(engine: AsyncEngine, now: datetime, done: Upkeep) -> None:
    async with autocommit(engine) as conn:
        existing = [p for p in await partitions(conn) if not p.default]
    first = week_start(now)
    for n in range(WEEKS_AHEAD + 1):
        start = first + timedelta(days=PARTITION_DAYS * n)
        end = start + timedelta(days=PARTITION_DAYS)
        if any(_overlaps(p, start, end) for p in existing):
            continue
        done.moved_from_default += await _create_week(engine, start, end)
        done.created.append(week_partition(start))


def _overlaps(partition: Partition, start: datetime, end: datetime) -> bool:
    lower = partition.lower or datetime.min.replace(tzinfo=UTC)
    return partition.upper is not None and lower < end and start < partition.upper


async def _create_week(engine: AsyncEngine, start: datetime, end: datetime) -> int:
    """Create the week as a table of its own, move into it what the default partition holds of
    it, and attach it, in one transaction: returns how many rows were moved."""
    name = week_partition(start)
    bounds = {"start": start, "end": end}
    async with transaction(engine) as conn:
        await conn.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
        await conn.execute(text(f"CREATE TABLE {name} (LIKE {TABLE} INCLUDING DEFAULTS)"))
        moved = await conn.execute(text(_MOVE.format(name=name)), bounds)
        await conn.execute(
            text(
                f"ALTER TABLE {TABLE} ATTACH PARTITION {name}"
                f" FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')"
            )
        )
    if moved.rowcount:
        log.warning("ingest.partition_rows_moved", partition=name, rows=moved.rowcount)
    return moved.rowcount


async def _drop_expired(engine: AsyncEngine, horizon: datetime, done: Upkeep) -> None:
    async with autocommit(engine) as conn:
        expired = [p for p in await partitions(conn) if p.upper is not None and p.upper <= horizon]
    for partition in expired:
        async with transaction(engine) as conn:
            await conn.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
            await conn.execute(text(f"DROP TABLE {partition.name}"))
        done.dropped.append(partition.name)
        log.info("ingest.partition_dropped", partition=partition.name, bytes=partition.bytes)


async def _prune(engine: AsyncEngine, now: datetime, retention: timedelta, done: Upkeep) -> None:
    # `now` may be a benchmark's future: the intervals are measured from the server's clock.
    ahead = now - datetime.now(UTC)
    for source, horizon in REDELIVERY_HORIZONS.items():
        # An event stays up to a week past the retention (its week goes whole): its key stays
        # that long and the provider's horizon more.
        keep = retention + timedelta(days=PARTITION_DAYS) + horizon - ahead
        done.keys_pruned += await delete_in_batches(
            engine, _PRUNE_KEYS, {"source": source, "keep": keep}
        )
    done.repeats_pruned = await delete_in_batches(
        engine, _PRUNE_REPEATS, {"keep": retention - ahead}
    )


async def keep_up(engine: AsyncEngine, retention_days: int) -> None:
    """Run `upkeep` now and every hour, until cancelled; a failure waits a turn."""

    async def once() -> None:
        done = await upkeep(engine, retention_days)
        if done.created or done.dropped or done.keys_pruned:
            log.info(
                "ingest.upkeep",
                created=done.created,
                dropped=done.dropped,
                keys_pruned=done.keys_pruned,
                repeats_pruned=done.repeats_pruned,
            )

    await keep_pruning(once, "ingest.upkeep_failed")
