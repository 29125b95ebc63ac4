"""Square's own record of what it sent: the events a lost delivery never brought.

SearchEvents lists the events of the last 28 days, in the webhook's own envelope and with the
webhook's `event_id`. Each one not stored here (by provider event id, the same dedupe as a
delivery) is recorded exactly as its delivery would have been, through `record_events`, marked
as found by recovery (schemas/origins.py): the consumers apply it with the same ownership and
version rules, and its journey says where it came from.

The search starts at the watermark less an overlap (an event can become searchable a little
after its `created_at`), at most 28 days back; a first run goes back as far as Square allows, or
to `--since`. Pages come oldest first; each page's events and the watermark's move to the last
of them commit in one transaction, so the watermark never passes an event that is not stored.
Once an event could not be written, the watermark stays where it was for the rest of the run.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from ingest.record import record_events
from ingest.square_events import square_new_event
from recovery.backstop import iso, isolated
from recovery.watermarks import EVENTS, advance_watermark, read_watermark
from schemas.origins import RECOVERED_FROM_SQUARE, RECOVERED_HEADER
from schemas.square import EVENT_TYPES, EVENTS_HORIZON, SquareEvent
from sluice.db import DatabaseUnavailableError, transaction
from sluice.ids import new_event_id
from sluice.jsontext import json_text

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from ingest.record import NewEvent
    from providers.square import SquareReader
    from recovery.summary import RunSummary

# Square's horizon, less a margin: a search that starts exactly 28 days back may be refused by
# the time it reaches Square.
_SEARCHABLE = EVENTS_HORIZON - timedelta(minutes=5)


async def search_events(  # noqa: PLR0913 - the pass's parts
    engine: AsyncEngine,
    reader: SquareReader,
    summary: RunSummary,
    *,
    since: datetime | None,
    overlap: timedelta,
    now: datetime,
) -> dict[tuple[str, str], int]:
    """Search, record what is missing, move the watermark; returns the newest version of each
    booking and customer (by entity type and id) the searched events carry, all stored now,
    which the sweeps then need not bring again."""
    tally = summary.pass_("events")
    versions: dict[tuple[str, str], int] = {}
    horizon = now - _SEARCHABLE
    watermark = await read_watermark(engine, EVENTS)
    start = since or (watermark - overlap if watermark else horizon)
    start = max(start, horizon)
    tally.scope = {"from": iso(start), "to": iso(now), "types": list(EVENT_TYPES)}
    tally.scope["watermark"] = iso(watermark) if watermark else None
    with isolated(summary, "events:enable"):
        # Events are searchable only while search is enabled, and never those of a disabled
        # period; enabling an enabled search changes nothing.
        await reader.enable_event_search()
    complete = True
    with isolated(summary, "pass:events"):
        async for page in reader.event_pages(EVENT_TYPES, start, now):
            tally.scanned += len(page)
            events = _recordable(page, summary)
            try:
                written = await _write(engine, events, page, versions, complete=complete)
            except DatabaseUnavailableError:
                raise
            except Exception as exc:  # noqa: BLE001 - this page's; the watermark stays put
                complete = False
                summary.error(f"events:page-from:{page[0].get('created_at')}", exc)
                continue
            tally.missing += written
            tally.recorded += written
            summary.entity("event").scanned += len(page)
            summary.entity("event").count("created", written)
            summary.entity("event").count("skipped", len(events) - written)
        if complete:
            async with transaction(engine) as conn:
                await advance_watermark(conn, EVENTS, now)
    return versions


def _recordable(page: list[dict[str, Any]], summary: RunSummary) -> list[_Found]:
    """The page's events as their deliveries would have been recorded. One Square cannot make
    into an envelope (it never will) is reported and passed over."""
    events: list[_Found] = []
    for found in page:
        body = json_text(found)
        try:
            envelope = SquareEvent.model_validate_json(body)
        except ValidationError as exc:
            summary.error(f"event:{found.get('event_id')}", exc)
            continue
        mark = {RECOVERED_HEADER: RECOVERED_FROM_SQUARE}
        event = square_new_event(
            envelope,
            body,
            event_id=new_event_id(),
            received_at=datetime.now(UTC),
            headers=mark,
            extra_headers=mark,
        )
        data = envelope.data
        version = ((data.object or {}).get(data.type) or {}).get("version")
        key = (envelope.entity_type, envelope.entity_id)
        events.append(_Found(event, key, version if isinstance(version, int) else None))
    return events


@dataclass(frozen=True, slots=True)
class _Found:
    event: NewEvent
    entity: tuple[str, str]  # (type, id)
    version: int | None  # of the booking or customer it carries


async def _write(
    engine: AsyncEngine,
    events: list[_Found],
    page: list[dict[str, Any]],
    versions: dict[tuple[str, str], int],
    *,
    complete: bool,
) -> int:
    """Record the page's events and, while every page so far was written, move the watermark to
    the last of them, in one transaction; how many were new. The versions of the objects they
    carry go into `versions`."""
    last = _last_created(page)
    async with transaction(engine) as conn:
        recorded = await record_events(conn, [f.event for f in events]) if events else []
        if complete and last is not None:
            await advance_watermark(conn, EVENTS, last)
    # Stored now, whether by this page or by a delivery: the consumers will apply it.
    for found in events:
        if found.version is not None and found.version > versions.get(found.entity, -1):
            versions[found.entity] = found.version
    return sum(not r.duplicate for r in recorded)


def _last_created(page: list[dict[str, Any]]) -> datetime | None:
    try:
        return max(datetime.fromisoformat(str(e["created_at"])) for e in page)
    except (KeyError, TypeError, ValueError):
        return None
