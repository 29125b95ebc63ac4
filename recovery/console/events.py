"""The console's events: a filtered, paged list, and one event with everything it did.

The list runs newest first on each source's (source, received_at) index, one branch per source
merged by UNION ALL (a single scan cannot keep that order across sources). The filters that
would otherwise scan far are driven from their own index: a provider event id from its dedupe
key (event_keys); an entity from the consumers' outcomes, which carry the message key (a
booking, customer or Airtable record id); the outcomes other than applied from the outcome rows'
own time index. Each key or outcome row names its event's received_at, so the event is read from
the one partition that holds it. Pages are keyset pages on (time, id), so the hundredth page
costs what the first does.
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

# Outcome rows name their event by text (a message without a sluice id has some other text, or
# none): only a UUID can be one of ours.
_OURS = "event_id ~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'"
# Outcomes other than `applied` are few: such a list is read from the outcome rows, newest first
# on their own index (migration 0011), each joined to its event (_EVENT_OF). It is in the order
# the outcomes were recorded, seconds after receipt.
_DRIVEN = {
    "stale": "SELECT CAST(event_id AS uuid) AS event_id, received_at,"  # noqa: S608
    f" applied_at AS listed_at FROM consumer_dedupe WHERE outcome = 'stale' AND {_OURS}",
    **{
        kind: "SELECT CAST(event_id AS uuid) AS event_id, received_at,"  # noqa: S608
        f" recorded_at AS listed_at FROM event_outcomes WHERE outcome = '{kind}' AND {_OURS}"
        for kind in ("duplicate", "ignored", "dead_lettered")
    },
}
# Applied is nearly every event: probing the newest events one by one finds a page at once.
_APPLIED = (
    "EXISTS (SELECT 1 FROM consumer_dedupe d WHERE d.consumer = ANY(:consumers)"
    " AND d.event_id = e.id::text AND d.outcome = 'applied')"
)
# An entity's events, through the outcome rows that carry its message key, each once: with its
# received_at where any of its rows has one (see _EVENT_OF).
_ENTITY = (
    "SELECT CAST(event_id AS uuid) AS event_id, max(received_at) AS received_at FROM ("  # noqa: S608
    f"SELECT event_id, received_at FROM consumer_dedupe WHERE entity_key = :entity AND {_OURS}"
    " UNION ALL SELECT event_id, received_at FROM event_outcomes"
    f" WHERE entity_key = :entity AND {_OURS}) AS k GROUP BY event_id"
)
# A provider event id's event, through its dedupe key (the store's partitions have no index on
# it): the key names the event and its partition, so the lookup reads one partition's index.
_KEYED = (
    "SELECT event_id, received_at FROM event_keys"
    " WHERE source = ANY(CAST(:sources AS text[])) AND provider_event_id = :provider_event_id"
)
_COLUMNS = (
    "e.id, e.source, e.provider_event_id, e.event_type, e.entity_type, e.entity_id,"
    " e.received_at, e.retry_number"
)
# An outcome row's event, read from the one partition its received_at names (migration 0017).
# A row written before that has none, and its event is looked up by id in every partition: the
# branches' conditions on `o` alone are checked once per row, so each row runs one branch.
_EVENT_OF = (
    f"SELECT {_COLUMNS} FROM inbound_events e"  # noqa: S608 - constants only
    " WHERE e.id = o.event_id AND e.received_at = o.received_at"
    f" UNION ALL SELECT {_COLUMNS} FROM inbound_events e"
    " WHERE e.id = o.event_id AND o.received_at IS NULL"
)
# A page and one row more, to know whether another page follows. A constant, not a parameter:
# PostgreSQL costs a generic plan with a parameter LIMIT as if it read a tenth of the table, so
# it would plan the statement again at every execution, over every partition (1.2 ms of 1.7 on a
# store of 33 partitions, against 0.2 of 0.6 with the constant).
_LIMIT = f"LIMIT {PAGE + 1}"
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
    listed_at: datetime  # what the list is ordered by: received, or the outcome's time
    outcomes: dict[str, str]  # consumer -> outcome

    @property
    def cursor(self) -> str:
        return f"{self.listed_at.isoformat()}_{self.id}"


def parse_cursor(value: str) -> tuple[datetime, str] | None:
    at, _, event_id = value.rpartition("_")
    try:
        return datetime.fromisoformat(at), str(uuid.UUID(event_id))
    except ValueError:
        return None


def _conditions(where: EventFilter, at: str) -> list[str]:
    """The filters every list applies; `at` is the column the list is ordered by."""
    conditions = []
    if where.outcome == "applied":
        conditions.append(_APPLIED)
    if where.entity is not None and where.outcome in _DRIVEN:
        conditions.append(f"e.id IN (SELECT event_id FROM ({_ENTITY}) AS k)")  # noqa: S608
    if where.provider_event_id is not None:
        conditions.append(f"(e.id, e.received_at) IN ({_KEYED})")
    if where.event_type is not None:
        conditions.append("e.event_type = :event_type")
    if where.since is not None:
        conditions.append("e.received_at >= :since")
    if where.until is not None:
        conditions.append("e.received_at < :until")
    if where.after is not None:
        conditions.append(f"({at}, e.id) < (:after_at, CAST(:after_id AS uuid))")
    if where.newer is not None:
        conditions.append(f"({at}, e.id) > (:newer_at, CAST(:newer_id AS uuid))")
    return conditions


def _by_source(source: str, where: EventFilter) -> str:
    """One source's newest-first scan; all values are bound parameters."""
    conditions = [f"e.source = '{source}'", *_conditions(where, "e.received_at")]  # SOURCES
    return (
        f"(SELECT {_COLUMNS}, e.received_at AS listed_at FROM inbound_events e"  # noqa: S608
        f" WHERE {' AND '.join(conditions)}"
        f" ORDER BY e.received_at DESC, e.id DESC {_LIMIT})"
    )


def _driven(rows: str, at: str, where: EventFilter) -> str:
    """The list read from outcome rows (`rows`: event_id, received_at and any other columns),
    each joined to its event, newest first on `at`."""
    conditions = _conditions(where, at)
    if where.source is not None:
        conditions.append("e.source = :source")
    return (
        f"SELECT {_COLUMNS}, {at} AS listed_at FROM ({rows}) AS o"  # noqa: S608 - constants only
        f" CROSS JOIN LATERAL ({_EVENT_OF}) AS e"
        f" WHERE {' AND '.join(conditions) or 'true'}"
        f" ORDER BY {at} DESC, e.id DESC {_LIMIT}"
    )


def _list_sql(where: EventFilter) -> str:
    if where.outcome in _DRIVEN:
        return _driven(_DRIVEN[where.outcome], "o.listed_at", where)
    if where.entity is not None:
        return _driven(_ENTITY, "e.received_at", where)
    sources = [where.source] if where.source in SOURCES else list(SOURCES)
    branches = " UNION ALL ".join(_by_source(s, where) for s in sources)
    return (
        f"SELECT * FROM ({branches}) AS page"  # noqa: S608 - no values from outside
        f" ORDER BY listed_at DESC, id DESC {_LIMIT}"
    )


async def list_events(engine: AsyncEngine, where: EventFilter) -> tuple[list[EventRow], bool]:
    """A page of events, newest first, and whether another page follows."""
    sql = _list_sql(where)
    params: dict[str, Any] = {
        "source": where.source,
        "sources": [where.source] if where.source in SOURCES else list(SOURCES),
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
            listed_at=row.listed_at,
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
# The journey's event, read again from the one partition its received_at names.
_BODY = text(
    "SELECT id, source, received_at, entity_type, body FROM inbound_events"
    " WHERE id = :id AND received_at = :received_at"
)


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
        event = journey["event"]
        found = {"id": event["id"], "received_at": datetime.fromisoformat(event["received_at"])}
        stored = (await conn.execute(_BODY, found)).one()
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
