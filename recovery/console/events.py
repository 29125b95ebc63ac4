"""The console's events: a filtered, paged list, and one event with everything it did.

The list runs newest first on each source's (source, received_at) index, one branch per source
merged by UNION ALL (a single scan cannot keep that order across sources). The filters that
would otherwise scan far are driven from their own index: a provider event id from the unique
(source, provider_event_id) index; an entity from the consumers' outcomes, which carry the
message key (a booking, customer or Airtable record id); the rare outcomes (stale, duplicate,
dead-lettered) from their partial indexes. Pages are keyset pages on (received_at, id), so the
hundredth page costs what the first does.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import text

from consumers.registry import CONSUMERS
from recovery.journey import find_journey
from recovery.replay_store import REBUILDERS
from recovery.runs import SOURCES
from schemas.leads import LEADS
from schemas.projections import JOBS, SQUARE_CUSTOMERS
from schemas.topics import Topic
from sluice.db import transaction

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from schemas.ownership import Ownership

PAGE = 50
OUTCOMES = ("applied", "stale", "duplicate", "ignored", "dead_lettered")

# Event ids with a rare outcome, from the partial indexes of migration 0011.
_RARE = {
    "stale": "SELECT CAST(event_id AS uuid) FROM consumer_dedupe WHERE outcome = 'stale'",
    "duplicate": "SELECT CAST(event_id AS uuid) FROM event_outcomes WHERE outcome = 'duplicate'",
    "dead_lettered": (
        "SELECT CAST(event_id AS uuid) FROM event_outcomes WHERE outcome = 'dead_lettered'"
    ),
}
# The common ones are most events: probing each newest event finds a page at once.
_COMMON = {
    "applied": "EXISTS (SELECT 1 FROM consumer_dedupe d WHERE d.consumer = ANY(:consumers)"
    " AND d.event_id = e.id::text AND d.outcome = 'applied')",
    "ignored": "EXISTS (SELECT 1 FROM event_outcomes o WHERE o.event_id = e.id::text"
    " AND o.outcome = 'ignored')",
}
_ENTITY = (
    "SELECT CAST(event_id AS uuid) FROM consumer_dedupe WHERE entity_key = :entity"
    " UNION SELECT CAST(event_id AS uuid) FROM event_outcomes WHERE entity_key = :entity"
)
_COLUMNS = (
    "e.id, e.source, e.provider_event_id, e.event_type, e.entity_type, e.entity_id,"
    " e.received_at, e.retry_number"
)
_OUTCOMES_OF = text(
    """
    SELECT event_id, consumer, outcome FROM consumer_dedupe
    WHERE consumer = ANY(:consumers) AND event_id = ANY(:ids)
    UNION ALL
    SELECT event_id, consumer, outcome FROM event_outcomes WHERE event_id = ANY(:ids)
    """
)


@dataclass(frozen=True, slots=True)
class EventFilter:
    source: str | None = None
    event_type: str | None = None
    entity: str | None = None
    provider_event_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    outcome: str | None = None
    # The page after this (received_at, id): the last row of the page before.
    after: tuple[datetime, str] | None = None
    # Only events newer than this (the live list's newest row).
    newer: tuple[datetime, str] | None = None


@dataclass(frozen=True, slots=True)
class EventRow:
    id: str
    source: str
    provider_event_id: str
    event_type: str
    entity_type: str | None
    entity_id: str | None
    received_at: datetime
    retry_number: int | None
    outcomes: dict[str, str]  # consumer -> outcome

    @property
    def cursor(self) -> str:
        return f"{self.received_at.isoformat()}_{self.id}"


def parse_cursor(value: str) -> tuple[datetime, str] | None:
    at, _, event_id = value.rpartition("_")
    try:
        return datetime.fromisoformat(at), str(uuid.UUID(event_id))
    except ValueError:
        return None


def _branch(source: str, where: EventFilter) -> str:
    """One source's newest-first scan with every filter; all values are bound parameters."""
    conditions = [f"e.source = '{source}'"]  # one of SOURCES, never a value from outside
    # Semi-joins on the primary key: each event once, found by id.
    if where.outcome in _RARE:
        conditions.append(f"e.id IN ({_RARE[where.outcome]})")
    elif where.outcome in _COMMON:
        conditions.append(_COMMON[where.outcome])
    if where.entity is not None:
        conditions.append(f"e.id IN ({_ENTITY})")
    if where.provider_event_id is not None:
        conditions.append("e.provider_event_id = :provider_event_id")
    if where.event_type is not None:
        conditions.append("e.event_type = :event_type")
    if where.since is not None:
        conditions.append("e.received_at >= :since")
    if where.until is not None:
        conditions.append("e.received_at < :until")
    if where.after is not None:
        conditions.append("(e.received_at, e.id) < (:after_at, CAST(:after_id AS uuid))")
    if where.newer is not None:
        conditions.append("(e.received_at, e.id) > (:newer_at, CAST(:newer_id AS uuid))")
    return (
        f"(SELECT {_COLUMNS} FROM inbound_events e"  # noqa: S608 - no values from outside
        f" WHERE {' AND '.join(conditions)}"
        " ORDER BY e.received_at DESC, e.id DESC LIMIT :limit)"
    )


async def list_events(engine: AsyncEngine, where: EventFilter) -> tuple[list[EventRow], bool]:
    """A page of events, newest first, and whether another page follows."""
    sources = [where.source] if where.source in SOURCES else list(SOURCES)
    branches = " UNION ALL ".join(_branch(s, where) for s in sources)
    sql = (
        f"SELECT * FROM ({branches}) AS page"  # noqa: S608 - no values from outside
        " ORDER BY received_at DESC, id DESC LIMIT :limit"
    )
    params: dict[str, Any] = {
        "limit": PAGE + 1,
        "consumers": list(CONSUMERS),
        "entity": where.entity,
        "provider_event_id": where.provider_event_id,
        "event_type": where.event_type,
        "since": where.since,
        "until": where.until,
        "after_at": where.after[0] if where.after else None,
        "after_id": where.after[1] if where.after else None,
        "newer_at": where.newer[0] if where.newer else None,
        "newer_id": where.newer[1] if where.newer else None,
    }
    async with transaction(engine) as conn:
        rows = (await conn.execute(text(sql), params)).all()
        ids = [str(row.id) for row in rows[:PAGE]]
        outcomes: dict[str, dict[str, str]] = {i: {} for i in ids}
        if ids:
            found = await conn.execute(_OUTCOMES_OF, {"ids": ids, "consumers": list(CONSUMERS)})
            for o in found:
                outcomes[o.event_id][o.consumer] = o.outcome
    page = [
        EventRow(
            id=str(row.id),
            source=row.source,
            provider_event_id=row.provider_event_id,
            event_type=row.event_type,
            entity_type=row.entity_type,
            entity_id=row.entity_id,
            received_at=row.received_at,
            retry_number=row.retry_number,
            outcomes=outcomes[str(row.id)],
        )
        for row in rows[:PAGE]
    ]
    return page, len(rows) > PAGE


# The projection a topic's messages are upserted into.
_PROJECTION_BY_TOPIC: dict[str, Ownership] = {
    Topic.SQUARE_BOOKINGS.value: JOBS,
    Topic.SQUARE_CUSTOMERS.value: SQUARE_CUSTOMERS,
    Topic.AIRTABLE_RECORDS.value: LEADS,
}
_BODY = text("SELECT id, source, received_at, entity_type, body FROM inbound_events WHERE id = :id")


@dataclass(frozen=True, slots=True)
class ProjectionRow:
    table: str
    key: str
    # (column, value, owner): owner is "source", "app", "cache" or "system"
    columns: list[tuple[str, Any, str]]


@dataclass(frozen=True, slots=True)
class EventPage:
    journey: dict[str, Any]
    body: bytes
    pretty_body: str
    envelope: dict[str, Any] | None
    envelope_error: str | None
    rows: list[ProjectionRow]


def _owner(ownership: Ownership, column: str) -> str:
    if column in ownership.app:
        return "app"
    if column in ownership.cached_columns:
        return "cache"
    if column in ownership.source_columns or column == ownership.key:
        return "source"
    return "system"


async def _projection_rows(
    engine: AsyncEngine, outcomes: list[dict[str, Any]]
) -> list[ProjectionRow]:
    touched = {
        (o["topic"], o["entity_key"])
        for o in outcomes
        if o.get("entity_key") and o.get("topic") in _PROJECTION_BY_TOPIC
    }
    found: list[ProjectionRow] = []
    async with transaction(engine) as conn:
        for topic, key in sorted(touched):
            ownership = _PROJECTION_BY_TOPIC[topic]
            table = ownership.table
            row = (await conn.execute(table.select().where(table.c[ownership.key] == key))).first()
            if row is None:
                continue
            columns = [
                (name, value, _owner(ownership, name)) for name, value in row._asdict().items()
            ]
            found.append(ProjectionRow(ownership.name, key, columns))
    return found


def _pretty(body: bytes) -> str:
    try:
        return json.dumps(json.loads(body), indent=2, ensure_ascii=False)
    except ValueError:
        return body.decode("utf-8", errors="replace")


async def event_page(engine: AsyncEngine, ref: str) -> EventPage | None:
    journey = await find_journey(engine, ref)
    if journey is None:
        return None
    async with transaction(engine) as conn:
        stored = (await conn.execute(_BODY, {"id": journey["event"]["id"]})).one()
    body = bytes(stored.body)
    envelope: dict[str, Any] | None = None
    envelope_error: str | None = None
    try:
        message = REBUILDERS[stored.source](stored)
    except (KeyError, ValueError) as exc:
        envelope_error = f"{type(exc).__name__}: {exc}"[:500]
    else:
        if message is not None:
            envelope = {
                "topic": message.topic,
                "key": message.key,
                "headers": message.headers,
                "value": json.loads(message.payload_json),
            }
    rows = await _projection_rows(engine, journey["outcomes"])
    return EventPage(journey, body, _pretty(body), envelope, envelope_error, rows)


async def stored_body(engine: AsyncEngine, event_id: str) -> tuple[bytes, str] | None:
    """The raw body exactly as received, and the provider's event id (for a file name)."""
    sql = text("SELECT body, provider_event_id FROM inbound_events WHERE id = CAST(:id AS uuid)")
    async with transaction(engine) as conn:
        row = (await conn.execute(sql, {"id": event_id})).first()
    return None if row is None else (bytes(row.body), row.provider_event_id)
