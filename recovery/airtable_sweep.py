"""The Airtable table sweep: list every mapped table, emit snapshots of what the projections miss.

For each base sluice knows (those of registered webhooks and those already in a projection),
each mapped table (schemas/leads.AIRTABLE_MAPPINGS, resolved through the base schema as the
leads consumer resolves them) is listed 100 records a page, cells by field id: every record with
`full`, otherwise those a user changed within the lookback (`filterByFormula` on
`LAST_MODIFIED_TIME()`). Each page is compared with its rows, and in one transaction:

- a record without a row, or whose row differs in a source-owned mapped value, gets a snapshot:
  an `airtable.records` event (event row and outbox row, through `record_events`) carrying every
  mapped source cell, empty ones as null, like a created record. The sweep never writes a
  projection; the leads consumer applies snapshots like any change, with its ownership rules.
- with `full`, a live row whose record was not listed gets a `destroyed` snapshot, so its
  `deleted_at` is set and the staff data on it kept. Only rows that existed before the listing
  started count, and only when every page was listed.
- a lead whose app-owned value Airtable does not hold is handed to the write-back again
  (consumers/lead_sync.push_again): the same stamp and pending mark a staff change makes.

Versioning. A listed record has no base transaction number, so a snapshot carries the row
version the sweep saw (0 when there was no row) and is applied only while the row is still at
that version: a tie wins, a webhook change that landed meanwhile (a higher version) wins over
it, and the snapshot is dropped. The next sweep catches anything left.

Snapshot ids are `sweep:<version>.<row state>.<cells digest>:<table>:<record>:<action>`, where
the row state is PostgreSQL's row version (`xmin`, which changes whenever the row is written):
the same record in the same state against the same row gives the same id, so a second run
before the consumers caught up finds it stored and counts it skipped, while a record that
changes back and forth still gets a new snapshot each time the row has moved on.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

import structlog
from sqlalchemy import text

from consumers.airtable_projection import MappingResolver
from consumers.lead_sync import Unsynced, push_again
from ingest.airtable_fetch import change_event
from ingest.record import record_events
from providers.airtable import AirtableUnavailableError, modified_after
from recovery.backstop import (
    ENDS_THE_RUN,
    end_run,
    iso,
    isolated,
    synthetic_headers,
    write_isolated,
)
from recovery.progress import SILENT, Progress
from schemas.airtable import RecordAction, RecordChange
from schemas.airtable_mapping import as_timestamp
from schemas.leads import AIRTABLE_MAPPINGS, LEADS
from sluice.db import transaction
from sluice.resilience import RetryPolicy

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from sqlalchemy import TextClause
    from sqlalchemy.engine import RowMapping
    from sqlalchemy.ext.asyncio import AsyncEngine

    from ingest.record import NewEvent, Recorded
    from providers.airtable import AirtableClient
    from recovery.summary import RunSummary
    from schemas.airtable_mapping import ResolvedTable
    from schemas.ownership import Ownership
    from sluice.resilience import ProviderCalls

log = structlog.get_logger(__name__)

PAGE_SIZE = 100
# A reconcile run's Airtable calls: 4 tries per request while Airtable is unavailable (after a
# 429 the shared limiter keeps the base waiting first), then they count against the breaker.
RETRY = RetryPolicy(attempts=4, retry_on=AirtableUnavailableError, wait_initial=0.5, wait_max=30.0)
WRITEBACK = "writeback"
# Summary entities by projection, as the Square reconciler names its own ("booking").
_ENTITIES = {LEADS.name: "lead"}


@dataclass(frozen=True, slots=True)
class SweepScope:
    full: bool
    modified_after: datetime | None  # None with `full`


@dataclass(slots=True)
class _Run:
    engine: AsyncEngine
    client: AirtableClient
    calls: ProviderCalls
    summary: RunSummary
    scope: SweepScope
    progress: Progress
    tables: int = 0
    pages: int = 0


@dataclass(slots=True)
class _Planned:
    """What one record needs: a snapshot event, and/or app-owned fields to push again."""

    record_id: str
    outcome: Literal["created", "updated"] | None = None
    event: NewEvent | None = None
    unsynced: list[Unsynced] = field(default_factory=list)
    writeback_checked: bool = False


async def sweep(  # noqa: PLR0913 - the run's parts, by keyword
    engine: AsyncEngine,
    connect: Callable[[], AirtableClient],
    calls: ProviderCalls,
    summary: RunSummary,
    scope: SweepScope,
    *,
    progress: Progress = SILENT,
) -> None:
    """Sweep every mapped table of every known base; `connect` gives the Airtable client, asked
    for only when there is a base to sweep. Its calls go through `calls` (RETRY, and Airtable's
    breaker); the requests it sent meanwhile are counted in `sweep.requests`."""
    for mapping in AIRTABLE_MAPPINGS:
        summary.entity(_entity(mapping.ownership))
    summary.entity(WRITEBACK)
    run: _Run | None = None
    sent_before = 0
    try:
        async with transaction(engine) as conn:
            bases = [row[0] for row in await conn.execute(_bases_statement())]
        if not bases:
            return
        try:
            client = connect()
        except RuntimeError as exc:  # not configured (AIRTABLE_API_KEY)
            summary.error("run", exc)
            return
        sent_before = client.requests_sent
        run = _Run(engine, client, calls, summary, scope, progress)
        resolver = MappingResolver(client, AIRTABLE_MAPPINGS)
        for base_id in bases:
            with isolated(summary, f"base:{base_id}"):
                tables = await calls(functools.partial(resolver.tables, base_id))
                for resolved in tables:
                    await _sweep_table(run, resolved)
    except ENDS_THE_RUN as exc:
        end_run(summary, exc)
    finally:
        summary.details["sweep"] = {
            "mode": "full" if scope.full else "lookback",
            "modified_after": iso(scope.modified_after) if scope.modified_after else None,
            "tables": run.tables if run else 0,
            "pages": run.pages if run else 0,
            "requests": run.client.requests_sent - sent_before if run else 0,
        }


async def _sweep_table(run: _Run, resolved: ResolvedTable) -> None:
    where = f"table:{resolved.base_id}/{resolved.table_id}"
    fields = [*resolved.by_field_id, *resolved.app_by_field_id]
    formula = modified_after(run.scope.modified_after) if run.scope.modified_after else None
    with isolated(run.summary, where):
        live_before = await _live_rows(run.engine, resolved) if run.scope.full else {}
        listed: set[str] = set()
        offset: str | None = None
        while True:
            page_of = functools.partial(
                run.client.record_page,
                resolved.base_id,
                resolved.table_id,
                offset=offset,
                formula=formula,
                fields=fields,
                page_size=PAGE_SIZE,
            )
            page = await run.calls(functools.partial(asyncio.to_thread, page_of))
            run.pages += 1
            await _reconcile_page(run, resolved, page.records)
            listed.update(str(record.get("id")) for record in page.records)
            run.progress.advance(len(page.records))
            if page.offset is None:
                break
            offset = page.offset
        gone = {k: v for k, v in live_before.items() if k not in listed}
        run.summary.entity(_entity(resolved.mapping.ownership)).scanned += len(gone)
        await _record(run, resolved, [_destroyed(resolved, k, *v) for k, v in gone.items()])
        run.tables += 1
        log.info(
            "airtable.table_swept",
            base_id=resolved.base_id,
            table_id=resolved.table_id,
            listed=len(listed),
            gone=len(gone),
        )


async def _reconcile_page(
    run: _Run, resolved: ResolvedTable, records: Sequence[Mapping[str, Any]]
) -> None:
    ownership = resolved.mapping.ownership
    tally = run.summary.entity(_entity(ownership))
    tally.scanned += len(records)
    ids = [str(r["id"]) for r in records if isinstance(r.get("id"), str)]
    async with transaction(run.engine) as conn:
        result = await conn.execute(_rows_statement(ownership), {"ids": ids})
        rows = {str(row[ownership.key]): row for row in result.mappings()}
    # What an empty cell converts to: a row holding NULL there (no payload ever carried the
    # cell, as Airtable leaves empty cells out) holds the same thing.
    empty = {m.column: m.convert(None) for m in resolved.by_field_id.values()}
    planned: list[_Planned] = []
    for record in records:
        record_id = record.get("id")
        if not isinstance(record_id, str):
            run.summary.error(f"{_entity(ownership)}:{record_id}", "record without an id")
            continue
        with isolated(run.summary, f"{_entity(ownership)}:{record_id}"):
            plan = _plan(resolved, record, rows.get(record_id), empty)
            if plan.event is None:
                tally.skipped += 1
            planned.append(plan)
    await _record(run, resolved, planned)


def _plan(
    resolved: ResolvedTable,
    record: Mapping[str, Any],
    row: RowMapping | None,
    empty: Mapping[str, Any],
) -> _Planned:
    """The snapshot a listed record needs, if any, and the app-owned fields Airtable lacks."""
    record_id = str(record["id"])
    fields: Mapping[str, Any] = record.get("fields") or {}
    cells = {field_id: fields.get(field_id) for field_id in resolved.by_field_id}
    created = as_timestamp(record.get("createdTime"))
    wanted: dict[str, Any] = {"base_id": resolved.base_id, "table_id": resolved.table_id}
    # A cell its column cannot hold is never stored: comparing it would find it stale forever.
    wanted |= resolved.columns(cells).columns
    if created is not None:
        wanted["airtable_created_at"] = created
    plan = _Planned(record_id)
    if row is not None and row["deleted_at"] is not None:
        return plan  # a destroyed record's row keeps its deletion and is not pushed to
    if row is None or any(
        not _same(value, row[column]) and not (row[column] is None and value == empty.get(column))
        for column, value in wanted.items()
    ):
        version = int(row[resolved.mapping.ownership.version] or 0) if row is not None else 0
        state = str(row["row_xmin"]) if row is not None else "new"
        digest = _digest([cells, record.get("createdTime")])
        action: RecordAction = "changed" if row is not None else "created"
        plan.outcome = "updated" if row is not None else "created"
        sweep_id = f"{version}.{state}.{digest}"
        plan.event = _snapshot_event(
            resolved, record_id, action, version, sweep_id, cells=cells, created=created
        )
    if row is not None and resolved.mapping.ownership is LEADS:
        plan.writeback_checked = True
        in_airtable = resolved.app_columns(
            {field_id: fields.get(field_id) for field_id in resolved.app_by_field_id}
        ).columns
        plan.unsynced = [
            Unsynced(record_id, column, row[column] is not None)
            for column, value in in_airtable.items()
            if not _same(row[column], value)
        ]
    return plan


def _destroyed(resolved: ResolvedTable, record_id: str, version: int, state: str) -> _Planned:
    event = _snapshot_event(resolved, record_id, "destroyed", version, f"{version}.{state}")
    return _Planned(record_id, outcome="updated", event=event)


def _snapshot_event(  # noqa: PLR0913 - a snapshot has that many parts
    resolved: ResolvedTable,
    record_id: str,
    action: RecordAction,
    version: int,
    sweep_id: str,
    *,
    cells: dict[str, Any] | None = None,
    created: datetime | None = None,
) -> NewEvent:
    change = RecordChange(
        base_id=resolved.base_id,
        table_id=resolved.table_id,
        record_id=record_id,
        action=action,
        base_transaction_number=version,
        timestamp=datetime.now(UTC),
        created_time=created,
        cells=cells or {},
        sweep=sweep_id,
    )
    return change_event(change, headers=synthetic_headers())


async def _record(run: _Run, resolved: ResolvedTable, planned: Sequence[_Planned]) -> None:
    """The page's snapshots and write-back asks in one transaction; if that fails for a reason
    other than an outage, record by record."""
    entity = _entity(resolved.mapping.ownership)
    await write_isolated(
        functools.partial(_write, run, resolved),
        planned,
        run.summary,
        lambda plan: f"{entity}:{plan.record_id}",
    )


async def _write(run: _Run, resolved: ResolvedTable, planned: Sequence[_Planned]) -> None:
    with_events = [p for p in planned if p.event is not None]
    unsynced = [f for p in planned for f in p.unsynced]
    recorded: list[Recorded] = []
    asked: set[str] = set()
    if with_events or unsynced:
        async with transaction(run.engine) as conn:
            if with_events:
                recorded = await record_events(conn, [p.event for p in with_events if p.event])
            asked = await push_again(conn, unsynced)
    tally = run.summary.entity(_entity(resolved.mapping.ownership))
    for plan, result in zip(with_events, recorded, strict=True):
        # A duplicate is a snapshot an earlier run already wrote: nothing new to do.
        tally.count("skipped" if result.duplicate or plan.outcome is None else plan.outcome)
    writeback = run.summary.entity(WRITEBACK)
    for plan in planned:
        if plan.writeback_checked:
            writeback.scanned += 1
            writeback.count("created" if plan.record_id in asked else "skipped")


async def _live_rows(engine: AsyncEngine, resolved: ResolvedTable) -> dict[str, tuple[int, str]]:
    """(version, row state) of the table's rows not deleted yet, before the listing starts."""
    ownership = resolved.mapping.ownership
    async with transaction(engine) as conn:
        result = await conn.execute(
            _live_statement(ownership),
            {"base_id": resolved.base_id, "table_id": resolved.table_id},
        )
        return {str(row[0]): (int(row[1] or 0), str(row[2])) for row in result}


@functools.cache
def _rows_statement(ownership: Ownership) -> TextClause:
    columns = [c for c in ownership.source_columns if not ownership.is_sticky(c)]
    selected = ", ".join(dict.fromkeys([ownership.key, *columns, *ownership.app, "deleted_at"]))
    return text(
        f"SELECT {selected}, xmin::text AS row_xmin FROM {ownership.name} "  # noqa: S608 - declared identifiers
        f"WHERE {ownership.key} = ANY(CAST(:ids AS text[]))"
    )


@functools.cache
def _live_statement(ownership: Ownership) -> TextClause:
    return text(
        f"SELECT {ownership.key}, {ownership.version}, xmin::text FROM {ownership.name} "  # noqa: S608 - declared identifiers
        "WHERE base_id = :base_id AND table_id = :table_id AND deleted_at IS NULL"
    )


def _bases_statement() -> TextClause:
    projections = sorted({m.ownership.name for m in AIRTABLE_MAPPINGS})
    sources = ["SELECT base_id FROM airtable_webhooks"]
    sources += [f"SELECT base_id FROM {name}" for name in projections]  # noqa: S608 - declared identifiers
    return text(" UNION ".join(sources) + " ORDER BY 1")


def _entity(ownership: Ownership) -> str:
    return _ENTITIES.get(ownership.name, ownership.name)


def _same(ours: Any, theirs: Any) -> bool:  # noqa: ANN401 - any column value
    # Airtable keeps times to the millisecond.
    if isinstance(ours, datetime) and isinstance(theirs, datetime):
        return _to_ms(ours) == _to_ms(theirs)
    return bool(ours == theirs)


def _to_ms(value: datetime) -> datetime:
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def _digest(value: Any) -> str:  # noqa: ANN401 - any JSON value
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]
