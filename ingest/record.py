"""Recording inbound events: the event row and its outbox row, together or not at all.

Used by every path that brings provider events in (webhooks, fetchers, the reconciler), so all of
them dedupe the same way: UNIQUE(source, provider_event_id), first writer wins.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from outbox.enqueue import (
    INSERT_MESSAGES,
    LOCKS_CTE,
    MESSAGE_COLUMNS,
    OutboxMessage,
    lock_params,
    message_row,
)
from sluice.db import driver_connection
from sluice.errors import InvalidInputError
from sluice.jsontext import json_text

if TYPE_CHECKING:
    import uuid
    from collections.abc import Sequence
    from datetime import datetime

    import psycopg
    from sqlalchemy.ext.asyncio import AsyncConnection


@dataclass(frozen=True, slots=True)
class NewEvent:
    id: uuid.UUID
    source: str
    provider_event_id: str
    event_type: str
    entity_type: str | None
    entity_id: str | None
    occurred_at: datetime
    received_at: datetime
    body: bytes
    headers: dict[str, str]
    retry_number: int | None
    retry_reason: str | None
    initial_delivery_at: datetime | None
    message: OutboxMessage

    @property
    def dedupe_key(self) -> tuple[str, str]:
        return (self.source, self.provider_event_id)


class RejectedEventError(InvalidInputError):
    """The database refuses this event's content (e.g. a NUL character): do not retry it."""


@dataclass(frozen=True, slots=True)
class Recorded:
    id: uuid.UUID
    duplicate: bool


# One statement records a batch: the outbox key locks, the events not stored before, and their
# outbox rows, so a batch is one round trip (and, on an autocommit connection, one transaction).
# Parameters are JSON documents (see outbox.enqueue); raw bodies travel base64 encoded and are
# stored as exactly the bytes received. Rows whose event was stored before insert nothing.
_RECORD = f"""
    WITH {LOCKS_CTE},
    m AS MATERIALIZED (
        SELECT r.* FROM locks, ROWS FROM (json_to_recordset(%(rows)s::json) AS (
            id uuid, source text, provider_event_id text, event_type text, entity_type text,
            entity_id text, occurred_at timestamptz, received_at timestamptz, body text,
            delivery_headers jsonb, retry_number int, retry_reason text,
            initial_delivery_at timestamptz, {MESSAGE_COLUMNS}))
        WITH ORDINALITY AS r(id, source, provider_event_id, event_type, entity_type, entity_id,
            occurred_at, received_at, body, delivery_headers, retry_number, retry_reason,
            initial_delivery_at, topic, key, payload, headers, event_id, n)
    ),
    ins AS (
        INSERT INTO inbound_events (
            id, source, provider_event_id, event_type, entity_type, entity_id, occurred_at,
            received_at, body, headers, retry_number, retry_reason, initial_delivery_at)
        SELECT id, source, provider_event_id, event_type, entity_type, entity_id, occurred_at,
            received_at, decode(body, 'base64'), delivery_headers, retry_number, retry_reason,
            initial_delivery_at
        FROM m
        ON CONFLICT (source, provider_event_id) DO NOTHING
        RETURNING id
    ),
    outboxed AS (
        {INSERT_MESSAGES}
        FROM m JOIN ins USING (id)
        ORDER BY m.n
    )
    SELECT id FROM ins
"""  # noqa: S608 - composed of constant fragments; values are parameters

_EXISTING = """
    SELECT e.id, e.source, e.provider_event_id FROM inbound_events AS e
    JOIN json_to_recordset(%(keys)s::json) AS k(source text, provider_event_id text)
      USING (source, provider_event_id)
"""


def _row(event: NewEvent) -> dict[str, object]:
    return {
        **message_row(event.message),
        "id": str(event.id),
        "source": event.source,
        "provider_event_id": event.provider_event_id,
        "event_type": event.event_type,
        "entity_type": event.entity_type,
        "entity_id": event.entity_id,
        "occurred_at": event.occurred_at.isoformat(),
        "received_at": event.received_at.isoformat(),
        "body": base64.b64encode(event.body).decode(),
        "delivery_headers": event.headers,
        "retry_number": event.retry_number,
        "retry_reason": event.retry_reason,
        "initial_delivery_at": _iso_or_none(event.initial_delivery_at),
    }


def _iso_or_none(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


async def record_events(conn: AsyncConnection, events: Sequence[NewEvent]) -> list[Recorded]:
    """Insert events not seen before, with one outbox row each; report the rest as duplicates.

    Must run inside the caller's transaction. Results are in the order of `events`.
    """
    return await record_events_on(await driver_connection(conn), events)


async def record_events_on(
    pg: psycopg.AsyncConnection[Any], events: Sequence[NewEvent]
) -> list[Recorded]:
    """`record_events` on a psycopg connection: in its transaction, or, on an autocommit
    connection, as a transaction of its own."""
    first: dict[tuple[str, str], NewEvent] = {}
    for event in events:
        first.setdefault(event.dedupe_key, event)
    candidates = list(first.values())

    params = {
        **lock_params([e.message for e in candidates]),
        "rows": json_text([_row(e) for e in candidates]),
    }
    cursor = await pg.execute(_RECORD, params)
    inserted = {row[0] for row in await cursor.fetchall()}

    stored_ids = {e.dedupe_key: e.id for e in candidates if e.id in inserted}
    missing = [e for e in candidates if e.id not in inserted]
    if missing:
        keys = [{"source": e.source, "provider_event_id": e.provider_event_id} for e in missing]
        cursor = await pg.execute(_EXISTING, {"keys": json_text(keys)})
        for stored_id, source, provider_event_id in await cursor.fetchall():
            stored_ids[(source, provider_event_id)] = stored_id

    results: list[Recorded] = []
    for event in events:
        stored = stored_ids[event.dedupe_key]
        results.append(Recorded(id=stored, duplicate=stored != event.id))
    return results
