"""The Square backstop: what Square has that the projections miss, in three passes.

1. **Events** (recovery/square_event_search.py): Square's own log of the events it sent
   (SearchEvents, 28 days), searched since a durable watermark; an event not stored here is
   recorded as its delivery would have been, marked as found by recovery.
2. **Customers**: SearchCustomers by `updated_at` since the last sweep (every customer on the
   first), for what the events cannot tell: a customer changed while search was disabled, or
   longer ago than the log goes back.
3. **Bookings** in a window (yesterday to tomorrow every few minutes; `--ahead`, nightly, covers
   SQUARE_RECONCILE_AHEAD_DAYS), walking Square's 31-day ListBookings windows, with the
   customers they reference.

For every booking and customer a sweep lists, compare its `version` with `jobs.booking_version`
(and `square_customers.version`). A missing or older row gets a synthetic Square event —
`booking.updated` / `customer.updated`, in Square's own envelope, with the object exactly as
Square returned it — written with its outbox row through the same `record_events` the webhook
uses. The reconciler never writes a projection: the consumers apply recovered and synthetic
events like any other, with their ownership rules, so staff columns stay untouched.

Synthetic event ids are `reconcile:<entity>:<id>:<version>`: a second run before the consumers
caught up finds them stored and creates nothing new (they count as skipped).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import structlog
from pydantic import ValidationError
from pydantic_core import PydanticSerializationError
from sqlalchemy import text

from ingest.record import record_events
from ingest.square_events import square_new_event
from providers.square import windows
from recovery.backstop import (
    ENDS_THE_RUN,
    end_run,
    iso,
    isolated,
    stop_if_it_ends_the_run,
    synthetic_body_mark,
    synthetic_headers,
    write_isolated,
)
from recovery.progress import SILENT, Progress
from recovery.square_event_search import search_events
from recovery.watermarks import CUSTOMERS, advance_watermark, read_watermark
from schemas.square import SquareEvent
from sluice.db import transaction
from sluice.ids import new_event_id
from sluice.jsontext import json_text

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable, Sequence

    from sqlalchemy import TextClause
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

    from ingest.record import NewEvent
    from providers.square import SquareReader
    from recovery.summary import PassTally, RunSummary

log = structlog.get_logger(__name__)

T = TypeVar("T")

Entity = Literal["booking", "customer"]

_JOB_VERSIONS = text(
    "SELECT booking_id, booking_version FROM jobs WHERE booking_id = ANY(CAST(:ids AS text[]))"
)
_CUSTOMER_VERSIONS = text(
    "SELECT customer_id, version FROM square_customers "
    "WHERE customer_id = ANY(CAST(:ids AS text[]))"
)


@dataclass(frozen=True, slots=True)
class SquareWindow:
    start: datetime
    end: datetime
    location_id: str | None = None


@dataclass(frozen=True, slots=True)
class SquareRecovery:
    """What a run looks at besides its booking window: the event log and the customer sweep,
    each from its watermark (less `overlap`), or from `since` when given."""

    since: datetime | None = None
    overlap: timedelta = timedelta(hours=1)
    events: bool = True
    customers: bool = True


@dataclass(slots=True)
class _Run:
    engine: AsyncEngine
    reader: SquareReader
    summary: RunSummary
    merchant_id: str
    run_id: str
    seen_customers: set[str] = field(default_factory=set)
    # The pass each entity's findings count in, as the run goes from pass to pass.
    passes: dict[Entity, PassTally] = field(default_factory=dict)
    # What the events pass recorded, by (entity, id): the version it brings, before any
    # consumer has applied it.
    recorded: dict[tuple[str, str], int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Synthetic:
    entity: Entity
    entity_id: str
    outcome: Literal["created", "updated"]
    event: NewEvent


async def reconcile_square(  # noqa: PLR0913 - the run's parts, by keyword after the first
    engine: AsyncEngine,
    reader: SquareReader,
    window: SquareWindow,
    summary: RunSummary,
    *,
    recovery: SquareRecovery | None = None,
    progress: Progress = SILENT,
) -> None:
    summary.details["window"] = {"from": iso(window.start), "to": iso(window.end)}
    summary.entity("booking")
    summary.entity("customer")
    try:
        await _passes(
            engine,
            reader,
            summary,
            window=window,
            recovery=recovery or SquareRecovery(),
            progress=progress,
        )
    finally:
        # Every request sent to Square, retries included (providers/counting.py).
        summary.details["requests"] = reader.requests_sent


async def _passes(  # noqa: PLR0913 - the run's parts, by keyword
    engine: AsyncEngine,
    reader: SquareReader,
    summary: RunSummary,
    *,
    window: SquareWindow,
    recovery: SquareRecovery,
    progress: Progress,
) -> None:
    try:
        merchant_id = await reader.merchant_id()
    except Exception as exc:  # noqa: BLE001 - reported in the summary, the run cannot go on
        summary.error("merchant:me", exc)
        return
    run = _Run(engine, reader, summary, merchant_id, uuid.uuid4().hex[:12])
    now = datetime.now(UTC)
    try:
        # Square's own record first: what it finds needs no synthetic event from the sweeps.
        if recovery.events:
            run.recorded = await search_events(
                engine, reader, summary, since=recovery.since, overlap=recovery.overlap, now=now
            )
        if recovery.customers:
            await _sweep_customers(run, recovery, now, progress)
        bookings = summary.pass_("bookings")
        bookings.scope = {"from": iso(window.start), "to": iso(window.end)}
        run.passes = {"booking": bookings, "customer": summary.pass_("booking_customers")}
        for low, high in windows(window.start, window.end):
            # An error is the window's; the next may work.
            with isolated(summary, f"window:{iso(low)}/{iso(high)}"):
                pages = reader.booking_pages(low, high, location_id=window.location_id)
                async for page in fetch_ahead(pages):
                    await _reconcile_page(run, page)
                    progress.advance(len(page))
    except ENDS_THE_RUN as exc:
        end_run(summary, exc)


async def _sweep_customers(
    run: _Run, recovery: SquareRecovery, now: datetime, progress: Progress
) -> None:
    """SearchCustomers by `updated_at` since the watermark; it moves to `now` once every page
    is committed (Square sorts these by creation, not by update, so no page proves more)."""
    tally = run.summary.pass_("customers")
    run.passes = {"customer": tally}
    watermark = await read_watermark(run.engine, CUSTOMERS)
    since = recovery.since or (watermark - recovery.overlap if watermark else None)
    tally.scope = {"updated_from": iso(since) if since else None, "to": iso(now)}
    errors = len(run.summary.errors)
    with isolated(run.summary, "pass:customers"):
        async for page in fetch_ahead(run.reader.customer_pages(since, now)):
            found = {c["id"]: c for c in page if isinstance(c.get("id"), str)}
            run.summary.entity("customer").scanned += len(page)
            tally.scanned += len(page)
            run.seen_customers |= set(found)
            async with transaction(run.engine) as conn:
                stored = await _versions(conn, _CUSTOMER_VERSIONS, list(found))
            await _record(run, _plan(run, "customer", found, stored))
            progress.advance(len(page))
        if len(run.summary.errors) == errors:
            async with transaction(run.engine) as conn:
                await advance_watermark(conn, CUSTOMERS, now)


async def fetch_ahead(pages: AsyncIterator[T]) -> AsyncIterator[T]:
    """Fetch the next page while the caller works on this one (Square's latency and the
    database's then overlap)."""
    source = aiter(pages)
    pending: asyncio.Future[T] = asyncio.ensure_future(anext(source))
    try:
        while True:
            try:
                page = await pending
            except StopAsyncIteration:
                return
            pending = asyncio.ensure_future(anext(source))
            yield page
    finally:
        pending.cancel()
        # Collect whatever the abandoned fetch ended with, so nothing is left unretrieved.
        with contextlib.suppress(BaseException):
            await pending


async def _reconcile_page(run: _Run, bookings: list[dict[str, Any]]) -> None:
    summary = run.summary
    summary.entity("booking").scanned += len(bookings)
    run.passes["booking"].scanned += len(bookings)
    usable: dict[str, dict[str, Any]] = {}
    for booking in bookings:
        booking_id, version = booking.get("id"), booking.get("version")
        if isinstance(booking_id, str) and isinstance(version, int):
            usable[booking_id] = booking
        else:
            summary.error(f"booking:{booking_id}", "booking without an id or a version")
    customers = await _customers_of(run, usable.values())
    async with transaction(run.engine) as conn:
        stored_customers = await _versions(conn, _CUSTOMER_VERSIONS, list(customers))
        stored_jobs = await _versions(conn, _JOB_VERSIONS, list(usable))
    # Customers first: the jobs consumer then finds them when it applies the bookings.
    synthetic = [
        *_plan(run, "customer", customers, stored_customers),
        *_plan(run, "booking", usable, stored_jobs),
    ]
    await _record(run, synthetic)


async def _customers_of(run: _Run, bookings: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The customers these bookings reference and this run has not looked at yet."""
    wanted = {
        b["customer_id"]
        for b in bookings
        if isinstance(b.get("customer_id"), str) and b["customer_id"] not in run.seen_customers
    }
    if not wanted:
        return {}
    run.seen_customers |= wanted
    tally = run.summary.entity("customer")
    try:
        lookup = await run.reader.customers(sorted(wanted))
    except Exception as exc:  # noqa: BLE001 - the customers' error, unless it ends the run
        stop_if_it_ends_the_run(exc)
        for customer_id in sorted(wanted):
            run.summary.error(f"customer:{customer_id}", exc)
        return {}
    looked = len(lookup.found) + len(lookup.not_found) + len(lookup.failed)
    tally.scanned += looked
    run.passes["customer"].scanned += looked
    # A booking may name a customer Square has since deleted or merged away: nothing to bring.
    tally.skipped += len(lookup.not_found)
    for customer_id, error in lookup.failed.items():
        run.summary.error(f"customer:{customer_id}", error)
    return lookup.found


def _plan(
    run: _Run,
    entity: Entity,
    objects: dict[str, dict[str, Any]],
    stored: dict[str, int | None],
) -> list[_Synthetic]:
    """Synthetic events for the objects whose row is missing or holds an older version."""
    planned: list[_Synthetic] = []
    tally = run.summary.entity(entity)
    for object_id, obj in objects.items():
        version = obj.get("version")
        known = object_id in stored
        have = stored.get(object_id)
        coming = run.recorded.get((entity, object_id))
        if coming is not None and (have is None or coming > have):
            # The events pass recorded this version already; the consumers have yet to apply it.
            known, have = True, coming
        if known and have is not None and (version is None or have >= version):
            tally.skipped += 1
            continue
        outcome: Literal["created", "updated"] = "updated" if known else "created"
        found = run.passes[entity]
        if known:
            found.stale += 1
        else:
            found.missing += 1
        try:
            event = synthetic_event(entity, obj, run.merchant_id, run.run_id, outcome)
        except (PydanticSerializationError, ValidationError) as exc:  # no JSON text, no envelope
            run.summary.error(f"{entity}:{object_id}", exc)
            continue
        planned.append(_Synthetic(entity, object_id, outcome, event))
    return planned


async def _versions(
    conn: AsyncConnection, query: TextClause, ids: list[str]
) -> dict[str, int | None]:
    if not ids:
        return {}
    return {row[0]: row[1] for row in await conn.execute(query, {"ids": ids})}


def synthetic_event(
    entity: Entity,
    obj: dict[str, Any],
    merchant_id: str,
    run_id: str,
    reason: Literal["created", "updated"],
) -> NewEvent:
    """A Square-shaped `<entity>.updated` event carrying `obj` as Square returned it."""
    object_id, version = obj["id"], obj.get("version")
    now = datetime.now(UTC)
    body = {
        "merchant_id": merchant_id,
        "type": f"{entity}.updated",
        "event_id": f"reconcile:{entity}:{object_id}:{version}",
        "created_at": iso(now),
        "data": {
            "type": entity,
            # Square suffixes a booking's id with its version in `data.id`.
            "id": f"{object_id}:{version}" if entity == "booking" else object_id,
            "object": {entity: obj},
        },
        **synthetic_body_mark("missing" if reason == "created" else "stale", run_id),
    }
    if entity == "booking" and obj.get("location_id"):
        body["location_id"] = obj["location_id"]
    body_text = json_text(body)
    envelope = SquareEvent.model_validate_json(body_text)
    return square_new_event(
        envelope,
        body_text,
        event_id=new_event_id(),
        received_at=now,
        headers=synthetic_headers(),
        extra_headers=synthetic_headers(),
    )


async def _record(run: _Run, items: Sequence[_Synthetic]) -> None:
    """All in one transaction; if that fails for a reason other than an outage, one by one."""
    if not items:
        return
    summary = run.summary

    async def write(batch: Sequence[_Synthetic]) -> None:
        async with transaction(run.engine) as conn:
            recorded = await record_events(conn, [i.event for i in batch])
        for item, result in zip(batch, recorded, strict=True):
            # A duplicate is a synthetic event an earlier run already wrote: nothing new to do.
            summary.entity(item.entity).count("skipped" if result.duplicate else item.outcome)
            if not result.duplicate:
                run.passes[item.entity].recorded += 1

    await write_isolated(write, items, summary, lambda item: f"{item.entity}:{item.entity_id}")
