"""Recording inbound events: the event row and its outbox row, together or not at all.

Used by every path that brings provider events in (webhooks, fetchers, the reconciler), so all of
them dedupe the same way: UNIQUE(source, provider_event_id), first writer wins.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import text

from outbox.enqueue import OutboxMessage, enqueue
from sluice.jsontext import json_text

if TYPE_CHECKING:
    import uuid
    from collections.abc import Sequence
    from datetime import datetime

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


class RejectedEventError(Exception):
    """The database refuses this event's content (e.g. a NUL character): do not retry it."""


@dataclass(frozen=True, slots=True)
class Recorded:
    id: uuid.UUID
    duplicate: bool


# One JSON document per statement (see outbox.enqueue for why). The raw body travels base64
# encoded and is stored as exactly the bytes received.
_INSERT_EVENTS = text(
    """
    INSERT INTO inbound_events (
        id, source, provider_event_id, event_type, entity_type, entity_id, occurred_at,
        received_at, body, headers, retry_number, retry_reason, initial_delivery_at)
    SELECT v.id, v.source, v.provider_event_id, v.event_type, v.entity_type, v.entity_id,
        v.occurred_at, v.received_at, decode(v.body, 'base64'), v.headers, v.retry_number,
        v.retry_reason, v.initial_delivery_at
    FROM json_to_recordset(CAST(:rows AS json)) AS v(
        id uuid, source text, provider_event_id text, event_type text, entity_type text,
        entity_id text, occurred_at timestamptz, received_at timestamptz, body text,
        headers jsonb, retry_number int, retry_reason text, initial_delivery_at timestamptz)
    ON CONFLICT (source, provider_event_id) DO NOTHING
    RETURNING id
    """
)

_EXISTING = text(
    """
    SELECT e.id, e.source, e.provider_event_id FROM inbound_events AS e
    JOIN json_to_recordset(CAST(:keys AS json)) AS k(source text, provider_event_id text)
      USING (source, provider_event_id)
    """
)


def _event_row(event: NewEvent) -> dict[str, object]:
    return {
        "id": str(event.id),
        "source": event.source,
        "provider_event_id": event.provider_event_id,
        "event_type": event.event_type,
        "entity_type": event.entity_type,
        "entity_id": event.entity_id,
        "occurred_at": event.occurred_at.isoformat(),
        "received_at": event.received_at.isoformat(),
        "body": base64.b64encode(event.body).decode(),
        "headers": event.headers,
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
    first: dict[tuple[str, str], NewEvent] = {}
    for event in events:
        first.setdefault(event.dedupe_key, event)
    candidates = list(first.values())

    inserted_rows = await conn.execute(
        _INSERT_EVENTS, {"rows": json_text([_event_row(e) for e in candidates])}
    )
    inserted = {row.id for row in inserted_rows}
    await enqueue(conn, [e.message for e in candidates if e.id in inserted])

    stored_ids = {e.dedupe_key: e.id for e in candidates if e.id in inserted}
    missing = [e for e in candidates if e.id not in inserted]
    if missing:
        keys = [{"source": e.source, "provider_event_id": e.provider_event_id} for e in missing]
        existing = await conn.execute(_EXISTING, {"keys": json_text(keys)})
        for row in existing:
            stored_ids[(row.source, row.provider_event_id)] = row.id

    results: list[Recorded] = []
    for event in events:
        stored = stored_ids[event.dedupe_key]
        results.append(Recorded(id=stored, duplicate=stored != event.id))
    return results
