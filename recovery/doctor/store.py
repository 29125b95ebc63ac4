"""The doctor's look at what history costs: the event store's weeks and every table that grows.

It warns when the store's upkeep (ingest/partitions.py) looks stalled: no week ahead of this
one, a week older than the retention still kept, or events caught by the default partition.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import text

from ingest.partitions import partitions
from recovery.doctor.findings import Finding, ok, warn
from schemas.event_partitions import DEFAULT_PARTITION, PARTITION_DAYS, week_start
from sluice.db import create_engine

if TYPE_CHECKING:
    from ingest.partitions import Partition
    from sluice.settings import Settings

# The tables that grow with history, each with its retention (README: Retention).
GROWING = [
    "event_keys",
    "delivery_repeats",
    "outbox",
    "consumer_dedupe",
    "event_outcomes",
    "dead_letters",
    "projection_changes",
    "idempotency_keys",
    "reconcile_runs",
]
_SIZES = text(
    "SELECT t, pg_total_relation_size(to_regclass(t)) FROM unnest(CAST(:tables AS text[])) AS t"
    " WHERE to_regclass(t) IS NOT NULL"
)
_PARTITIONED = text("SELECT to_regclass('event_keys')")
_CAUGHT = text(f"SELECT count(*) FROM (SELECT FROM {DEFAULT_PARTITION} LIMIT 1000000) AS c")  # noqa: S608
_FIX = "check that ingest runs (it keeps the store), or run `sluice store upkeep`"


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n //= 1024
    raise AssertionError  # pragma: no cover - the loop always returns


async def event_store(settings: Settings) -> list[Finding]:
    if settings.database_url is None:
        return []  # the database check says so
    engine = create_engine(settings.database_url, pool_size=1, application_name="sluice-doctor")
    try:
        async with engine.connect() as conn:
            if (await conn.execute(_PARTITIONED)).scalar_one() is None:
                return []  # not migrated yet: the migrations check says so
            found = await partitions(conn)
            caught = (await conn.execute(_CAUGHT)).scalar_one()
            sizes = [(str(t), int(n)) for t, n in await conn.execute(_SIZES, {"tables": GROWING})]
    finally:
        await engine.dispose()
    return [*_store_findings(found, caught, settings.event_retention_days), _sizes(sizes)]


def _store_findings(found: list[Partition], caught: int, retention_days: int) -> list[Finding]:
    now = datetime.now(UTC)
    dated = [p for p in found if not p.default]
    total = sum(p.bytes for p in found)
    oldest = dated[0] if dated else None
    since = "" if oldest is None or oldest.lower is None else f" from {oldest.lower:%Y-%m-%d}"
    kept = "every event kept" if not retention_days else f"kept {retention_days} days"
    findings = [
        ok(
            "event store",
            f"{len(dated)} partitions{since}, oldest {oldest.name if oldest else 'none'},"
            f" {_size(total)}; {kept}",
        )
    ]
    ahead = [p for p in dated if p.lower is not None and p.lower > week_start(now)]
    if not ahead:
        findings.append(warn("event store weeks ahead", "no week is ready after this one", _FIX))
    if retention_days and oldest is not None and oldest.upper is not None:
        overdue = now - timedelta(days=retention_days + 1) - oldest.upper
        if overdue > timedelta(days=PARTITION_DAYS):
            findings.append(
                warn("event store retention", f"{oldest.name} should have been dropped", _FIX)
            )
    if caught:
        findings.append(
            warn("event store default partition", f"{caught:,} events no week covers", _FIX)
        )
    return findings


def _sizes(sizes: list[tuple[str, int]]) -> Finding:
    shown = ", ".join(f"{name} {_size(size)}" for name, size in sizes)
    return ok("table sizes", shown)
