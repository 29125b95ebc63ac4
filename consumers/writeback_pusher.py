"""Pushing app-owned lead fields to Airtable, outside any database transaction.

Each round claims due records from `lead_sync` (a short transaction with a lease, so pushers in
several processes never push one record at once and a crashed pusher's records are taken over),
reads their current values, and pushes them in updates of at most 10 records per request. The
values pushed are the row's current ones, not those of the change that asked: a record changed
twice before its push is pushed once, with the newer values.

Per field, a value is skipped, and recorded in `sync_conflicts`, when Airtable changed that
field later than the app did. Calls go through the shared per-base rate limiter (at most
AIRTABLE_REQUESTS_PER_SECOND; a 429 blocks the base for AIRTABLE_RATE_LIMIT_WAIT_SECONDS), are
retried while Airtable is unavailable (`PusherConfig.call_retry`: 3 tries per request), and pass
Airtable's circuit breaker (sluice/resilience.py): after AIRTABLE_BREAKER_THRESHOLD updates in a
row failed their retries, no call is made until AIRTABLE_BREAKER_RESET_SECONDS have passed, then
one update is let through as a trial. Errors say what to do: a transient one (Airtable down, the
breaker open) fails the records for a later round, with a growing delay; an invalid one (a 4xx)
is the record's own problem: a batch that gets one is split to find the record, which is marked
failed and not retried until staff change it again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import text

from consumers.writeback_metrics import WritebackMetrics
from providers.airtable import AirtableUnavailableError
from schemas.leads import LEADS, LEADS_MAPPING
from sluice.db import DatabaseUnavailableError, transaction
from sluice.errors import InvalidInputError, TransientError
from sluice.jsontext import json_text
from sluice.resilience import Backoff, ProviderCalls, RetryPolicy

if TYPE_CHECKING:
    from opentelemetry.trace import Span
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

    from providers.airtable import AirtableClient
    from schemas.airtable_mapping import TableMapping
    from sluice.resilience import CircuitBreaker
    from sluice.tracing import Tracing

log = structlog.get_logger(__name__)

MAX_RECORDS_PER_REQUEST = 10
# Tries of one update while Airtable is unavailable (a 429 included), and the waits between.
CALL_RETRY = RetryPolicy(
    attempts=3, retry_on=AirtableUnavailableError, wait_initial=0.5, wait_max=10.0
)


@dataclass(frozen=True, slots=True)
class PusherConfig:
    claim_max: int = 100
    lease_seconds: float = 120.0
    call_retry: RetryPolicy = CALL_RETRY
    record_backoff: Backoff = field(default_factory=lambda: Backoff(2.0, 900.0))
    poll_seconds: float = 1.0


@dataclass(slots=True)
class PushSummary:
    claimed: int = 0
    synced: int = 0
    failed: int = 0
    conflicts: int = 0
    requests: int = 0  # sent to Airtable in the round, retries included (providers/counting.py)


@dataclass(frozen=True, slots=True)
class _Field:
    column: str
    value: Any
    app_changed_at: datetime
    airtable_changed_at: datetime | None
    airtable_value: Any

    @property
    def conflicts(self) -> bool:
        return (
            self.airtable_changed_at is not None and self.airtable_changed_at > self.app_changed_at
        )


@dataclass(slots=True)
class _Record:
    record_id: str
    base_id: str
    table_id: str
    push: dict[str, _Field] = field(default_factory=dict)
    conflicts: list[_Field] = field(default_factory=list)
    traceparent: str | None = None  # of the change that asked for the push


def _end(spans: list[Span], error: BaseException | None) -> None:
    for span in spans:
        if error is not None:
            from opentelemetry.trace import Status, StatusCode  # noqa: PLC0415 - optional extra

            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, type(error).__name__))
        span.end()


def _cell(value: Any) -> Any:  # noqa: ANN401 - any column value
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    return value


_CLAIM = text(
    """
    WITH due AS (
        SELECT record_id FROM lead_sync
        WHERE status IN ('pending', 'failed') AND next_attempt_at <= now()
          AND (claimed_until IS NULL OR claimed_until < now())
        ORDER BY next_attempt_at
        LIMIT :limit
        FOR UPDATE SKIP LOCKED
    )
    UPDATE lead_sync AS s SET claimed_until = now() + make_interval(secs => :lease)
    FROM due WHERE s.record_id = due.record_id
    RETURNING s.record_id, s.traceparent
    """
)

_UNPUSHED = text(
    """
    SELECT record_id, column_name, app_changed_at, airtable_changed_at, airtable_value
    FROM lead_sync_fields
    WHERE record_id = ANY(CAST(:ids AS text[])) AND app_changed_at IS NOT NULL
      AND app_changed_at > COALESCE(pushed_app_changed_at, '-infinity')
    """
)

_PUSHED = text(
    """
    UPDATE lead_sync_fields AS f SET pushed_app_changed_at = v.at
    FROM jsonb_to_recordset(CAST(:rows AS jsonb))
        AS v(record_id text, column_name text, at timestamptz)
    WHERE f.record_id = v.record_id AND f.column_name = v.column_name
      AND (f.pushed_app_changed_at IS NULL OR f.pushed_app_changed_at < v.at)
    """
)

_CONFLICTS = text(
    """
    INSERT INTO sync_conflicts
        (record_id, column_name, app_value, app_changed_at, airtable_value, airtable_changed_at)
    SELECT v.record_id, v.column_name, v.app_value, v.app_at, v.airtable_value, v.airtable_at
    FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS v(
        record_id text, column_name text, app_value jsonb, app_at timestamptz,
        airtable_value jsonb, airtable_at timestamptz)
    """
)

# Synced unless staff changed a field again while we were pushing (then pending, pushed next)
# or a field was skipped because Airtable changed it later (then conflict, until staff resolve
# it: the app and Airtable hold different values).
_DONE = text(
    """
    UPDATE lead_sync AS s SET
        status = CASE WHEN EXISTS (
            SELECT 1 FROM lead_sync_fields AS f WHERE f.record_id = s.record_id
              AND f.app_changed_at > COALESCE(f.pushed_app_changed_at, '-infinity')
        ) THEN 'pending'
        WHEN EXISTS (
            SELECT 1 FROM sync_conflicts AS c
            WHERE c.record_id = s.record_id AND c.resolved_at IS NULL
        ) THEN 'conflict' ELSE 'synced' END,
        attempts = 0, last_error = NULL, synced_at = now(), claimed_until = NULL,
        next_attempt_at = now(), updated_at = now(),
        traceparent = CASE WHEN EXISTS (
            SELECT 1 FROM lead_sync_fields AS f WHERE f.record_id = s.record_id
              AND f.app_changed_at > COALESCE(f.pushed_app_changed_at, '-infinity')
        ) THEN s.traceparent END
    WHERE s.record_id = ANY(CAST(:ids AS text[]))
    """
)

_ATTEMPTS = text("SELECT max(attempts) FROM lead_sync WHERE record_id = ANY(CAST(:ids AS text[]))")

_FAILED = text(
    """
    UPDATE lead_sync SET status = 'failed', attempts = attempts + 1, last_error = :error,
        claimed_until = NULL, updated_at = now(),
        next_attempt_at = CASE WHEN CAST(:retry_in AS float8) IS NULL THEN NULL
                               ELSE now() + make_interval(secs => CAST(:retry_in AS float8)) END
    WHERE record_id = ANY(CAST(:ids AS text[]))
    RETURNING attempts
    """
)


class WritebackPusher:
    def __init__(  # noqa: PLR0913 - the pusher's parts, the optional ones by keyword
        self,
        engine: AsyncEngine,
        client: AirtableClient,
        breaker: CircuitBreaker,
        config: PusherConfig | None = None,
        mapping: TableMapping = LEADS_MAPPING,
        *,
        metrics: WritebackMetrics | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self._engine = engine
        self._client = client
        self.metrics = metrics or WritebackMetrics()
        self._tracing = tracing
        self.breaker = breaker
        self._config = config or PusherConfig()
        self._calls = ProviderCalls(breaker, self._config.call_retry)
        self._fields = {m.column: m.field for m in mapping.app_fields}
        self.wake = asyncio.Event()

    async def run(self, stopping: asyncio.Event) -> None:
        """Push rounds until `stopping`; between rounds sleep until woken or the poll interval."""
        while not stopping.is_set():
            try:
                summary = await self.push_once()
            except DatabaseUnavailableError as exc:
                log.warning("writeback.database_unavailable", error=str(exc))
                summary = PushSummary()
            if summary.claimed:
                continue  # more may be due
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), self._config.poll_seconds)

    async def push_once(self) -> PushSummary:
        summary = PushSummary()
        sent_before = self._client.requests_sent
        try:
            await self._push(summary)
        finally:
            summary.requests = self._client.requests_sent - sent_before
            self.metrics.sent(self._client.requests_sent)
        await self.metrics.sample(self._engine)
        return summary

    async def _push(self, summary: PushSummary) -> None:
        records = await self._claim()
        summary.claimed = len(records)
        if not records:
            return
        done: list[_Record] = [r for r in records if not r.push]
        groups: dict[tuple[str, str], list[_Record]] = defaultdict(list)
        for record in records:
            if record.push:
                groups[(record.base_id, record.table_id)].append(record)
        for (base_id, table_id), group in groups.items():
            for start in range(0, len(group), MAX_RECORDS_PER_REQUEST):
                chunk = group[start : start + MAX_RECORDS_PER_REQUEST]
                done += await self._push_chunk(base_id, table_id, chunk, summary)
        await self._complete(done)
        summary.synced += len(done)
        summary.conflicts += sum(len(r.conflicts) for r in done)

    async def _claim(self) -> list[_Record]:
        c = self._config
        app_columns = ", ".join(LEADS.app)
        async with transaction(self._engine) as conn:
            claimed = await conn.execute(_CLAIM, {"limit": c.claim_max, "lease": c.lease_seconds})
            traces = {row.record_id: row.traceparent for row in claimed}
            ids = list(traces)
            if not ids:
                return []
            leads = {
                row.record_id: row
                for row in await conn.execute(
                    text(
                        f"SELECT record_id, base_id, table_id, deleted_at, {app_columns} "  # noqa: S608 - declared columns
                        "FROM leads WHERE record_id = ANY(CAST(:ids AS text[]))"
                    ),
                    {"ids": ids},
                )
            }
            unpushed = list(await conn.execute(_UNPUSHED, {"ids": ids}))
            gone = [i for i in ids if i not in leads or leads[i].deleted_at is not None]
            if gone:
                await self._fail(conn, gone, "the lead is deleted in Airtable", retry_in=None)
        records = {
            i: _Record(i, leads[i].base_id, leads[i].table_id, traceparent=traces[i])
            for i in ids
            if i not in gone
        }
        for row in unpushed:
            record = records.get(row.record_id)
            if record is None or row.column_name not in self._fields:
                continue
            value = getattr(leads[row.record_id], row.column_name)
            pending = _Field(
                row.column_name,
                value,
                row.app_changed_at,
                row.airtable_changed_at,
                row.airtable_value,
            )
            if pending.conflicts:
                record.conflicts.append(pending)
            else:
                record.push[row.column_name] = pending
        return list(records.values())

    async def _push_chunk(
        self, base_id: str, table_id: str, chunk: list[_Record], summary: PushSummary
    ) -> list[_Record]:
        """Push one update; returns the records now in Airtable. Failures are recorded here."""
        body = [
            {
                "id": r.record_id,
                "fields": {self._fields[c]: _cell(f.value) for c, f in r.push.items()},
            }
            for r in chunk
        ]

        async def update() -> None:
            await asyncio.to_thread(self._client.update_records, base_id, table_id, body)

        spans = self._spans(base_id, chunk)
        try:
            await self._calls(update)
        except InvalidInputError as exc:
            _end(spans, exc)
            if len(chunk) > 1:  # one bad record must not hold back the other nine
                pushed: list[_Record] = []
                for record in chunk:
                    pushed += await self._push_chunk(base_id, table_id, [record], summary)
                return pushed
            await self._record_failure(chunk, str(exc), retry=False, summary=summary)
            return []
        except TransientError as exc:  # Airtable unavailable, or its breaker open
            _end(spans, exc)
            await self._record_failure(chunk, str(exc), retry=True, summary=summary)
            return []
        _end(spans, None)
        now = datetime.now(UTC)
        self.metrics.pushed(
            [(now - f.app_changed_at).total_seconds() for r in chunk for f in r.push.values()]
        )
        return chunk

    def _spans(self, base_id: str, chunk: list[_Record]) -> list[Span]:
        """One client span per lead pushed, in the trace of the change that asked for it."""
        if self._tracing is None:
            return []
        return [
            self._tracing.client_span(
                "PATCH airtable records",
                traceparent=r.traceparent,
                attributes={"sluice.lead": r.record_id, "sluice.airtable_base": base_id},
            )
            for r in chunk
        ]

    async def _record_failure(
        self, chunk: list[_Record], error: str, *, retry: bool, summary: PushSummary
    ) -> None:
        summary.failed += len(chunk)
        ids = [r.record_id for r in chunk]
        log.warning("writeback.failed", records=ids, error=error[:300], will_retry=retry)
        async with transaction(self._engine) as conn:
            # The delay grows with the record's attempts; jittered so records spread out.
            attempts = await conn.execute(_ATTEMPTS, {"ids": ids})
            previous = attempts.scalar() or 0
            delay = self._config.record_backoff.delay(previous) if retry else None
            await self._fail(conn, ids, error, retry_in=delay)

    @staticmethod
    async def _fail(
        conn: AsyncConnection, ids: list[str], error: str, *, retry_in: float | None
    ) -> None:
        await conn.execute(_FAILED, {"ids": ids, "error": error[:2000], "retry_in": retry_in})

    async def _complete(self, records: list[_Record]) -> None:
        if not records:
            return
        pushed = [
            {"record_id": r.record_id, "column_name": f.column, "at": f.app_changed_at.isoformat()}
            for r in records
            for f in (*r.push.values(), *r.conflicts)
        ]
        conflicts = [
            {
                "record_id": r.record_id,
                "column_name": f.column,
                "app_value": _cell(f.value),
                "app_at": f.app_changed_at.isoformat(),
                "airtable_value": f.airtable_value,
                "airtable_at": f.airtable_changed_at.isoformat() if f.airtable_changed_at else None,
            }
            for r in records
            for f in r.conflicts
        ]
        for conflict in conflicts:
            log.info(
                "writeback.conflict_skipped",
                **{k: conflict[k] for k in ("record_id", "column_name")},
            )
        async with transaction(self._engine) as conn:
            await conn.execute(_PUSHED, {"rows": json_text(pushed)})
            if conflicts:
                await conn.execute(_CONFLICTS, {"rows": json_text(conflicts)})
            await conn.execute(_DONE, {"ids": [r.record_id for r in records]})
