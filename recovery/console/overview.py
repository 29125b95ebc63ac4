"""The figures of the console's overview, each read from the table (or Kafka) it names.

Every query here is served by an index or reads a small table, so the overview stays quick with
millions of stored events: webhook counts come from ingest's per-minute tallies
(`webhook_answers`), never from counting events; the backlog count stops at `BACKLOG_CAP`;
the write-back counts its outstanding leads and estimates the synced ones.
Consumer lag comes from Kafka, sampled on the side every few seconds (`LagSampler`), so a page
never waits on the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import text

from consumers.lead_sync import leads_by_state
from consumers.observe import partition_lag
from recovery.runs import SOURCES, recent_runs
from recovery.watermarks import all_watermarks
from schemas.topics import CONSUMER_TOPICS
from sluice.db import row_json, transaction

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

log = structlog.get_logger(__name__)

HOURS = 24
BACKLOG_CAP = 100_000

# Webhook answers per minute, tallied by ingest (ingest/answer_tally.py): a day is at most
# 1,440 rows per reason, whatever the volume.
_ANSWERS = text(
    """
    SELECT reason, floor(extract(epoch FROM now() - minute) / 3600)::int AS ago,
           sum(count) AS n
    FROM webhook_answers
    WHERE source = :source AND minute > now() - make_interval(hours => :hours)
    GROUP BY 1, 2
    """
)
_BACKLOG = text(
    f"""
    SELECT (SELECT count(*) FROM (SELECT 1 FROM outbox LIMIT {BACKLOG_CAP + 1}) AS capped) AS n,
           (SELECT min(created_at) FROM outbox) AS oldest
    """  # noqa: S608 - a constant
)
_RELAYS = text(
    """
    SELECT r.owner, r.alive_until, count(l.bucket) AS buckets
    FROM outbox_relays r LEFT JOIN outbox_leases l ON l.owner = r.owner AND l.lease_until > now()
    GROUP BY r.owner, r.alive_until ORDER BY r.owner
    """
)
_UNOWNED = text(
    "SELECT count(*) FROM outbox_leases WHERE owner IS NULL OR lease_until IS NULL"
    " OR lease_until <= now()"
)
_DEAD = text(
    """
    SELECT consumer, count(*) AS n FROM dead_letters
    WHERE redriven_at IS NULL AND discarded_at IS NULL GROUP BY consumer ORDER BY consumer
    """
)
_WEBHOOKS = text(
    """
    SELECT webhook_id, base_id, "cursor", expires_at, last_fetched_at, last_error_code
    FROM airtable_webhooks ORDER BY base_id, webhook_id
    """
)
_CONFLICTS = text("SELECT count(*) FROM sync_conflicts WHERE resolved_at IS NULL")  # open ones
_PAUSED = text("SELECT component, paused_at, paused_by, reason FROM pauses ORDER BY component")


def _by_hour(rows: Sequence[Any], hours: int) -> list[int]:
    """Counts per hour, oldest first (index 0 is `hours` ago, the last is the current hour)."""
    counts = [0] * hours
    for row in rows:
        if 0 <= row.ago < hours:
            counts[hours - 1 - row.ago] += int(row.n)
    return counts


@dataclass(frozen=True, slots=True)
class SourceTraffic:
    source: str
    accepted: list[int]  # per hour, oldest first
    duplicates: list[int]
    refused: list[dict[str, Any]]  # reason, hour, day

    @property
    def accepted_hour(self) -> int:
        return self.accepted[-1]

    @property
    def duplicates_hour(self) -> int:
        return self.duplicates[-1]


async def _traffic(conn: AsyncConnection, source: str) -> SourceTraffic:
    rows = (await conn.execute(_ANSWERS, {"source": source, "hours": HOURS})).all()
    refused: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row.reason not in ("accepted", "duplicate"):
            counts = refused.setdefault(row.reason, {"reason": row.reason, "hour": 0, "day": 0})
            counts["day"] += int(row.n)
            counts["hour"] += int(row.n) if row.ago == 0 else 0
    return SourceTraffic(
        source,
        _by_hour([r for r in rows if r.reason == "accepted"], HOURS),
        _by_hour([r for r in rows if r.reason == "duplicate"], HOURS),
        sorted(refused.values(), key=lambda r: str(r["reason"])),
    )


@dataclass(slots=True)
class LagSample:
    at: datetime | None = None
    # consumer -> [(topic, partition, lag)]
    lag: dict[str, list[tuple[str, int, int]]] = field(default_factory=dict)
    error: str | None = None


class LagSampler:
    """Each consumer group's lag per partition, read from Kafka every `interval` seconds."""

    def __init__(self, bootstrap: str | None, group_prefix: str, interval: float = 5.0) -> None:
        self._bootstrap = bootstrap
        self._prefix = group_prefix
        self._interval = interval
        self.sample = LagSample(error=None if bootstrap else "KAFKA_BOOTSTRAP_SERVERS is not set")

    async def run(self) -> None:
        if self._bootstrap is None:
            return
        while True:
            await self.refresh()
            await asyncio.sleep(self._interval)

    async def refresh(self) -> None:
        if self._bootstrap is None:
            return
        lag: dict[str, list[tuple[str, int, int]]] = {}
        try:
            for consumer, topics in CONSUMER_TOPICS.items():
                found = await asyncio.wait_for(
                    partition_lag(self._bootstrap, f"{self._prefix}{consumer}", topics),
                    self._interval * 2,
                )
                lag[consumer] = sorted((tp.topic, tp.partition, n) for tp, n in found.items())
        except Exception as exc:  # noqa: BLE001 - shown on the overview, retried next interval
            self.sample = LagSample(self.sample.at, self.sample.lag, f"{type(exc).__name__}: {exc}")
            log.warning("console.lag_sample_failed", error=str(exc))
            return
        self.sample = LagSample(datetime.now(UTC), lag)

    @contextlib.asynccontextmanager
    async def running(self) -> Any:  # noqa: ANN401 - an async context manager
        task = asyncio.create_task(self.run())
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


@dataclass(frozen=True, slots=True)
class Overview:
    at: datetime
    traffic: list[SourceTraffic]
    backlog: int
    backlog_capped: bool
    oldest_unpublished: datetime | None
    relays: list[dict[str, Any]]
    unowned_buckets: int
    dead_letters: list[dict[str, Any]]
    reconciles: list[dict[str, Any]]
    watermarks: list[dict[str, Any]]
    webhooks: list[dict[str, Any]]
    writeback: dict[str, int]
    writeback_synced_estimated: bool
    conflicts: int
    paused: list[dict[str, Any]]
    lag: LagSample

    @property
    def oldest_age(self) -> timedelta | None:
        return None if self.oldest_unpublished is None else self.at - self.oldest_unpublished

    @property
    def open_dead_letters(self) -> int:
        return sum(int(d["n"]) for d in self.dead_letters)


async def read_overview(engine: AsyncEngine, lag: LagSample) -> Overview:
    async with transaction(engine) as conn:
        traffic = [await _traffic(conn, source) for source in SOURCES]
        backlog = (await conn.execute(_BACKLOG)).one()
        relays = [row_json(r) for r in (await conn.execute(_RELAYS)).all()]
        unowned = int((await conn.execute(_UNOWNED)).scalar_one())
        dead = [row_json(r) for r in (await conn.execute(_DEAD)).all()]
        webhooks = [row_json(r) for r in (await conn.execute(_WEBHOOKS)).all()]
        writeback, synced_estimated = await leads_by_state(conn, estimate_synced=True)
        conflicts = int((await conn.execute(_CONFLICTS)).scalar_one())
        paused = [row_json(r) for r in (await conn.execute(_PAUSED)).all()]
    reconciles = await recent_runs(engine, limit=5)
    watermarks = [
        {**w, "age": timedelta(seconds=w["age_seconds"])} for w in await all_watermarks(engine)
    ]
    return Overview(
        at=datetime.now(UTC),
        traffic=traffic,
        backlog=min(int(backlog.n), BACKLOG_CAP),
        backlog_capped=int(backlog.n) > BACKLOG_CAP,
        oldest_unpublished=backlog.oldest,
        relays=relays,
        unowned_buckets=unowned,
        dead_letters=dead,
        reconciles=reconciles,
        watermarks=watermarks,
        webhooks=webhooks,
        writeback=writeback,
        writeback_synced_estimated=synced_estimated,
        conflicts=conflicts,
        paused=paused,
        lag=lag,
    )
