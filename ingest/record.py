"""Recording inbound events: the event row and its outbox row, together or not at all.

Used by every path that brings provider events in (webhooks, fetchers, the reconciler), so all of
them dedupe the same way: UNIQUE(source, provider_event_id), first writer wins.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import text

from outbox.enqueue import OutboxMessage, enqueue

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


_INSERT_EVENTS = text(
    """
    INSERT INTO inbound_events (
        id, source, provider_event_id, event_type, entity_type, entity_id, occurred_at,
        received_at, body, headers, retry_number, retry_reason, initial_delivery_at)
    SELECT i, s, p, t, et, ei, o, r, b, CAST(h AS jsonb), rn, rr, ida
    FROM unnest(
        CAST(:ids AS uuid[]), CAST(:sources AS text[]), CAST(:provider_ids AS text[]),
        CAST(:types AS text[]), CAST(:entity_types AS text[]), CAST(:entity_ids AS text[]),
        CAST(:occurred AS timestamptz[]), CAST(:received AS timestamptz[]),
        CAST(:bodies AS bytea[]), CAST(:headers AS text[]), CAST(:retry_numbers AS int[]),
        CAST(:retry_reasons AS text[]), CAST(:initial AS timestamptz[])
    ) AS v(i, s, p, t, et, ei, o, r, b, h, rn, rr, ida)
    ON CONFLICT (source, provider_event_id) DO NOTHING
    RETURNING id
    """
)

_EXISTING = text(
    """
    SELECT id, source, provider_event_id FROM inbound_events
    WHERE (source, provider_event_id) IN (
        SELECT * FROM unnest(CAST(:sources AS text[]), CAST(:provider_ids AS text[])))
    """
)


async def record_events(conn: AsyncConnection, events: Sequence[NewEvent]) -> list[Recorded]:
    """Insert events not seen before, with one outbox row each; report the rest as duplicates.

    Must run inside the caller's transaction. Results are in the order of `events`.
    """
    first: dict[tuple[str, str], NewEvent] = {}
    for event in events:
        first.setdefault(event.dedupe_key, event)
    candidates = list(first.values())

    inserted_rows = await conn.execute(
        _INSERT_EVENTS,
        {
            "ids": [e.id for e in candidates],
            "sources": [e.source for e in candidates],
            "provider_ids": [e.provider_event_id for e in candidates],
            "types": [e.event_type for e in candidates],
            "entity_types": [e.entity_type for e in candidates],
            "entity_ids": [e.entity_id for e in candidates],
            "occurred": [e.occurred_at for e in candidates],
            "received": [e.received_at for e in candidates],
            "bodies": [e.body for e in candidates],
            "headers": [json.dumps(e.headers) for e in candidates],
            "retry_numbers": [e.retry_number for e in candidates],
            "retry_reasons": [e.retry_reason for e in candidates],
            "initial": [e.initial_delivery_at for e in candidates],
        },
    )
    inserted = {row.id for row in inserted_rows}
    await enqueue(conn, [e.message for e in candidates if e.id in inserted])

    stored_ids = {e.dedupe_key: e.id for e in candidates if e.id in inserted}
    missing = [e for e in candidates if e.id not in inserted]
    if missing:
        existing = await conn.execute(
            _EXISTING,
            {
                "sources": [e.source for e in missing],
                "provider_ids": [e.provider_event_id for e in missing],
            },
        )
        for row in existing:
            stored_ids[(row.source, row.provider_event_id)] = row.id

    results: list[Recorded] = []
    for event in events:
        stored = stored_ids[event.dedupe_key]
        results.append(Recorded(id=stored, duplicate=stored != event.id))
    return results
