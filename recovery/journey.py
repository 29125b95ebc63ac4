"""An event's journey, read back: how it was received and stored, whether it still waits in the
outbox, where the relay published it, and what each consumer group did with it.

The first half is the event's inbound_events row (the first delivery's headers and the key that
verified it), the later deliveries of it (delivery_repeats, each written by ingest in the
transaction that answered it) and its outbox row while unpublished; the second is
event_outcomes, written by each consumer in the transaction of its effect
(consumers/journey.py), and the dead letters it became. An event is found by sluice's id or by
the provider's event id; events are searched by the entity they are about.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import text

from consumers.registry import CONSUMERS
from recovery.runs import SOURCES
from sluice.db import row_json, transaction
from sluice.ids import made_at

if TYPE_CHECKING:
    from sqlalchemy import Row
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine


# By our id, or by the provider's (whose key row names ours and its partition: see
# schemas/event_partitions.py). The store has no index on id across its partitions, so each
# lookup names the time it reads: a v7 id carries the millisecond it was made, beside its
# event's receipt, and a key row carries its event's received_at. Only an id made otherwise (v4,
# before sluice made v7 ids) or a v7 id made long before its receipt is looked for in every week.
_NEAR = "id = CAST(:id AS uuid) AND received_at >= :lo AND received_at < :hi"
_KEYED = (
    "(id, received_at) IN (SELECT event_id, received_at FROM event_keys"
    " WHERE source = ANY(CAST(:sources AS text[])) AND provider_event_id = :ref)"
)
_ANYWHERE = "id = CAST(:id AS uuid)"
# How far from its id's time an event's receipt is looked for: a reconciler run stamps the
# events it makes with the run's start, so the two can be that run's length apart.
NEAR = timedelta(days=1)
_EVENT_COLUMNS = (
    "id, source, provider_event_id, event_type, entity_type, entity_id, occurred_at,"
    " received_at, headers, retry_number, retry_reason, initial_delivery_at, signature_key,"
    " octet_length(body) AS body_bytes"
)
_BODY_COLUMNS = "body, provider_event_id"
# Square retries an event about a dozen times at most, but a signed delivery can be replayed by
# anyone who captured it: the answer lists the first repeats and counts them all.
REPEATS_SHOWN = 100
_REPEATS = text(
    """
    SELECT received_at, headers, signature_key, count(*) OVER () AS total
    FROM delivery_repeats WHERE event_id = CAST(:id AS uuid)
    ORDER BY received_at, id LIMIT :limit
    """
)
_WAITING = text(
    "SELECT id, topic, created_at FROM outbox WHERE event_id = CAST(:id AS uuid) ORDER BY id"
)
# Applied and stale outcomes are dedupe records (its primary key, (consumer, event_id), serves
# the lookup); the rest are event_outcomes rows (consumers/journey.py).
_OUTCOME_COLUMNS = 'consumer, outcome, origin, topic, partition, "offset", entity_key, published_at'
_OUTCOMES = text(
    f"""
    SELECT {_OUTCOME_COLUMNS}, detail, applied_at AS recorded_at FROM consumer_dedupe
    WHERE consumer = ANY(CAST(:consumers AS text[])) AND event_id = :id
    UNION ALL
    SELECT {_OUTCOME_COLUMNS}, detail, recorded_at FROM event_outcomes WHERE event_id = :id
    ORDER BY recorded_at, "offset"
    """  # noqa: S608 - our own column list
)
_DEAD = text(
    """
    SELECT id, consumer, error_type, error, created_at, redriven_at
    FROM dead_letters WHERE event_id = :id ORDER BY id
    """
)
# Newest first: what happened to this booking, customer or Airtable record lately.
_BY_ENTITY = text(
    """
    (SELECT event_id, consumer, outcome, origin, topic, published_at, applied_at AS recorded_at
     FROM consumer_dedupe WHERE entity_key = :key ORDER BY applied_at DESC LIMIT :limit)
    UNION ALL
    (SELECT event_id, consumer, outcome, origin, topic, published_at, recorded_at
     FROM event_outcomes WHERE entity_key = :key ORDER BY recorded_at DESC LIMIT :limit)
    ORDER BY recorded_at DESC LIMIT :limit
    """
)


def _lookups(ref: str) -> list[tuple[str, dict[str, Any]]]:
    """The conditions that may find the event `ref` names, cheapest first, with their values."""
    try:
        event_id: uuid.UUID | None = uuid.UUID(ref)
    except ValueError:
        event_id = None
    made = None if event_id is None else made_at(event_id)
    found: list[tuple[str, dict[str, Any]]] = []
    if made is not None:
        found.append((_NEAR, {"id": str(event_id), "lo": made - NEAR, "hi": made + NEAR}))
    found.append((_KEYED, {"ref": ref, "sources": list(SOURCES)}))
    if event_id is not None:
        found.append((_ANYWHERE, {"id": str(event_id)}))
    return found


async def _find(conn: AsyncConnection, columns: str, ref: str) -> Row[Any] | None:
    for condition, params in _lookups(ref):
        sql = f"SELECT {columns} FROM inbound_events WHERE {condition}"  # noqa: S608 - constants
        row = (await conn.execute(text(f"{sql} ORDER BY received_at LIMIT 1"), params)).first()
        if row is not None:
            return row
    return None


async def find_body(engine: AsyncEngine, ref: str) -> tuple[bytes, str] | None:
    """The raw body of the event `ref` names, exactly as received, and its provider event id."""
    async with transaction(engine) as conn:
        row = await _find(conn, _BODY_COLUMNS, ref)
    return None if row is None else (bytes(row.body), row.provider_event_id)


async def find_journey(engine: AsyncEngine, ref: str) -> dict[str, Any] | None:
    """The journey of the event `ref` names (sluice's id or the provider's), or None."""
    async with transaction(engine) as conn:
        event = await _find(conn, _EVENT_COLUMNS, ref)
        if event is None:
            return None
        event_id = str(event.id)
        repeats = (await conn.execute(_REPEATS, {"id": event_id, "limit": REPEATS_SHOWN})).all()
        waiting = (await conn.execute(_WAITING, {"id": event_id})).all()
        found = {"id": event_id, "consumers": list(CONSUMERS)}
        outcomes = (await conn.execute(_OUTCOMES, found)).all()
        dead = (await conn.execute(_DEAD, {"id": event_id})).all()
    received = row_json(event)
    received["id"] = event_id
    published = next(
        (
            {"topic": o.topic, "partition": o.partition, "offset": o.offset,
             "at": o.published_at.isoformat() if o.published_at else None}
            for o in outcomes
        ),
        None,
    )  # fmt: skip
    return {
        "event": received,
        "repeats": [
            {
                "received_at": r.received_at.isoformat(),
                "headers": r.headers,
                "signature_key": r.signature_key,
            }
            for r in repeats
        ],
        "repeats_total": repeats[0].total if repeats else 0,
        "outbox": [row_json(row) for row in waiting],
        "published": published,
        "outcomes": [row_json(row) for row in outcomes],
        "dead_letters": [row_json(row) for row in dead],
    }


async def events_for_entity(engine: AsyncEngine, key: str, *, limit: int) -> list[dict[str, Any]]:
    """What the consumers did lately with events about this entity, newest first."""
    async with transaction(engine) as conn:
        rows = (await conn.execute(_BY_ENTITY, {"key": key, "limit": limit})).all()
    return [row_json(row) for row in rows]
