"""Recording inbound events: the event row and its outbox row, together or not at all.

Used by every path that brings provider events in (webhooks, fetchers, the reconciler), so all of
them dedupe the same way: one `event_keys` row per (source, provider_event_id), first writer
wins (the event store is partitioned by time, so its own indexes cannot say; see
schemas/event_partitions.py). A webhook delivery
of an event already stored leaves a delivery_repeats row (its headers, the key that verified it),
written with the answer's transaction, so the event's journey shows every retry.
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
    # The fingerprint of the key that verified a webhook delivery (ingest.key_fingerprint); None
    # for events that were not delivered (fetched, reconciled), whose repeats are not recorded.
    signature_key: str | None = None

    @property
    def dedupe_key(self) -> tuple[str, str]:
        return (self.source, self.provider_event_id)


class RejectedEventError(InvalidInputError):
    """The database refuses this event's content (e.g. a NUL character): do not retry it."""


@dataclass(frozen=True, slots=True)
class Recorded:
    id: uuid.UUID
    duplicate: bool


_REPEAT_COLUMNS = (
    "id uuid, source text, provider_event_id text, received_at timestamptz, headers jsonb,"
    " signature_key text"
)
# A delivery is a repeat when the event stored under its key has another id than its own: a
# batch sent again after its commit was lost (group_commit) finds its own events, not repeats.
# (A later delivery within such a batch, never stored under its own id, is recorded again.)
_INSERT_REPEATS = """
    INSERT INTO delivery_repeats (event_id, received_at, headers, signature_key)
    SELECT s.id, a.received_at, a.headers, a.signature_key
"""
_REPEAT_OF = "USING (source, provider_event_id) WHERE s.id <> a.id ORDER BY a.received_at"

# One statement records a batch: the outbox key locks, the events not stored before, their
# outbox rows, and a delivery_repeats row for each delivery of an event already stored, so a
# batch is one round trip (and, on an autocommit connection, one transaction), duplicates
# included. Parameters are JSON documents (see outbox.enqueue); raw bodies travel base64 encoded
# and are stored as exactly the bytes received. `repeats` holds the batch's later deliveries of
# an event it delivers twice or more.
#
# `prior` reads with the statement's snapshot, so it finds events committed before the
# statement began, never one another transaction committed while this one waited for it (on a
# key lock or the unique index): record_events_on looks those few up with _STORED_MEANWHILE.
_RECORD = f"""
    WITH {LOCKS_CTE},
    m AS MATERIALIZED (
        SELECT r.* FROM locks, ROWS FROM (json_to_recordset(%(rows)s::json) AS (
            id uuid, source text, provider_event_id text, event_type text, entity_type text,
            entity_id text, occurred_at timestamptz, received_at timestamptz, body text,
            delivery_headers jsonb, retry_number int, retry_reason text,
            initial_delivery_at timestamptz, signature_key text, {MESSAGE_COLUMNS}))
        WITH ORDINALITY AS r(id, source, provider_event_id, event_type, entity_type, entity_id,
            occurred_at, received_at, body, delivery_headers, retry_number, retry_reason,
            initial_delivery_at, signature_key, topic, key, payload, headers, event_id, n)
    ),
    keyed AS (
        INSERT INTO event_keys (source, provider_event_id, event_id, received_at)
        SELECT source, provider_event_id, id, received_at FROM m
        ON CONFLICT (source, provider_event_id) DO NOTHING
        RETURNING event_id AS id, source, provider_event_id
    ),
    ins AS (
        INSERT INTO inbound_events (
            id, source, provider_event_id, event_type, entity_type, entity_id, occurred_at,
            received_at, body, headers, retry_number, retry_reason, initial_delivery_at,
            signature_key)
        SELECT m.id, m.source, m.provider_event_id, event_type, entity_type, entity_id,
            occurred_at, received_at, decode(body, 'base64'), delivery_headers, retry_number,
            retry_reason, initial_delivery_at, signature_key
        FROM m JOIN keyed USING (id)
    ),
    outboxed AS (
        {INSERT_MESSAGES}
        FROM m JOIN keyed USING (id)
        ORDER BY m.n
    ),
    missed AS (SELECT * FROM m WHERE id NOT IN (SELECT id FROM keyed)),
    prior AS (
        SELECT k.event_id AS id, k.source, k.provider_event_id
        FROM missed JOIN event_keys AS k USING (source, provider_event_id)
    ),
    stored AS (SELECT * FROM keyed UNION ALL SELECT * FROM prior),
    again AS (
        SELECT id, source, provider_event_id, received_at, delivery_headers AS headers,
            signature_key
        FROM missed WHERE signature_key IS NOT NULL
        UNION ALL
        SELECT * FROM json_to_recordset(%(repeats)s::json) AS ({_REPEAT_COLUMNS})
    ),
    repeated AS (
        {_INSERT_REPEATS}
        FROM again AS a JOIN stored AS s {_REPEAT_OF}
    )
    SELECT id, source, provider_event_id FROM stored
"""  # noqa: S608 - composed of constant fragments; values are parameters

# Events another transaction stored while the batch waited for it: their ids, and the repeats
# of them that the batch delivered.
_STORED_MEANWHILE = f"""
    WITH s AS (
        SELECT e.event_id AS id, e.source, e.provider_event_id FROM event_keys AS e
        JOIN json_to_recordset(%(keys)s::json) AS k(source text, provider_event_id text)
          USING (source, provider_event_id)
    ),
    repeated AS (
        {_INSERT_REPEATS}
        FROM json_to_recordset(%(repeats)s::json) AS a({_REPEAT_COLUMNS})
        JOIN s {_REPEAT_OF}
    )
    SELECT id, source, provider_event_id FROM s
"""  # noqa: S608 - composed of constant fragments; values are parameters


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
        "signature_key": event.signature_key,
    }


def _repeat_row(event: NewEvent) -> dict[str, object]:
    return {
        "id": str(event.id),
        "source": event.source,
        "provider_event_id": event.provider_event_id,
        "received_at": event.received_at.isoformat(),
        "headers": event.headers,
        "signature_key": event.signature_key,
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
    connection, as a transaction of its own (two, in the rare case _STORED_MEANWHILE runs)."""
    first: dict[tuple[str, str], NewEvent] = {}
    for event in events:
        first.setdefault(event.dedupe_key, event)
    candidates = list(first.values())
    repeats = [e for e in events if e.signature_key and first[e.dedupe_key] is not e]

    params = {
        **lock_params([e.message for e in candidates]),
        "rows": json_text([_row(e) for e in candidates]),
        "repeats": json_text([_repeat_row(e) for e in repeats]),
    }
    cursor = await pg.execute(_RECORD, params)
    stored_ids = {(source, ref): stored for stored, source, ref in await cursor.fetchall()}

    meanwhile = [e for e in candidates if e.dedupe_key not in stored_ids]
    if meanwhile:
        keys = {e.dedupe_key for e in meanwhile}
        again = [e for e in meanwhile if e.signature_key]
        again += [e for e in repeats if e.dedupe_key in keys]
        cursor = await pg.execute(
            _STORED_MEANWHILE,
            {
                "keys": json_text([{"source": s, "provider_event_id": p} for s, p in keys]),
                "repeats": json_text([_repeat_row(e) for e in again]),
            },
        )
        for stored, source, ref in await cursor.fetchall():
            stored_ids[(source, ref)] = stored

    results: list[Recorded] = []
    for event in events:
        stored = stored_ids[event.dedupe_key]
        results.append(Recorded(id=stored, duplicate=stored != event.id))
    return results
