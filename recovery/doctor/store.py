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
    "SELECT t, pg_size_pretty(pg_total_relation_size(to_regclass(t)))"
    " FROM unnest(CAST(:tables AS text[])) AS t WHERE to_regclass(t) IS NOT NULL"
)
_PRETTY = text("SELECT pg_size_pretty(CAST(:bytes AS bigint))")
_PARTITIONED = text("SELECT to_regclass('event_keys')")
_CAUGHT = text(f"SELECT count(*) FROM (SELECT FROM {DEFAULT_PARTITION} LIMIT 1000000) AS c")  # noqa: S608
_FIX = "check that ingest runs (it keeps the store), or run `sluice store upkeep`"


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
            total = sum(p.bytes for p in found)
            store_size = (await conn.execute(_PRETTY, {"bytes": total})).scalar_one()
            sizes = [(str(t), str(n)) for t, n in await conn.execute(_SIZES, {"tables": GROWING})]
    finally:
        await engine.dispose()
    findings = _store_findings(found, store_size, caught, settings.event_retention_days)
    return [*findings, _sizes(sizes)]


def _store_findings(
    found: list[Partition], size: str, caught: int, retention_days: int
) -> list[Finding]:
    now = datetime.now(UTC)
    dated = [p for p in found if not p.default]
    oldest = dated[0] if dated else None
    since = "" if oldest is None or oldest.lower is None else f" from {oldest.lower:%Y-%m-%d}"
    kept = "every event kept" if not retention_days else f"kept {retention_days} days"
    findings = [
        ok(
            "event store",
            f"{len(dated)} partitions{since}, oldest {oldest.name if oldest else 'none'},"
            f" {size}; {kept}",
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


def _sizes(sizes: list[tuple[str, str]]) -> Finding:
    shown = ", ".join(f"{name} {size}" for name, size in sizes)
    return ok("table sizes", shown)
