"""Writing outbox rows: the only way any component announces a change.

Callers pass the connection of the transaction that makes the change, so the message exists if and
only if the change committed. Before inserting, the transaction takes a transaction-scoped advisory
lock per message key (in a fixed order, so writers never deadlock). Two transactions that write the
same key therefore run one after the other, and the outbox id order of a key is its commit order:
the relay can publish a key's rows by id and still follow commit order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sluice.db import driver_connection
from sluice.jsontext import json_text
from sluice.tracing import stamp_traceparent

if TYPE_CHECKING:
    import uuid
    from collections.abc import Mapping, Sequence

    from sqlalchemy.ext.asyncio import AsyncConnection

# First half of the two-int advisory lock key, so our locks never meet another tool's.
KEY_LOCK_NAMESPACE = 0x51CE


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    topic: str
    key: str
    payload_json: str  # the message value, already encoded as JSON text
    headers: dict[str, str] = field(default_factory=dict)
    event_id: uuid.UUID | None = None

    @classmethod
    def of(
        cls,
        topic: str,
        key: str,
        payload: Mapping[str, Any],
        headers: Mapping[str, str] | None = None,
        event_id: uuid.UUID | None = None,
    ) -> OutboxMessage:
        return cls(topic, key, json_text(payload), dict(headers or {}), event_id)


# Parameters travel as one JSON document per statement: encoding a JSON text is C-fast, where
# adapting a dozen Python lists to PostgreSQL arrays dominated the ingest hot path. Statements run
# on the driver connection (sluice.db.driver_connection), so placeholders are psycopg's.
#
# Every statement that writes outbox rows starts with this CTE: the key locks, in a fixed order.
# It is materialised and aggregated, and the rows to insert are joined to it, so every lock is held
# before the statement produces a single row, and one statement does both (one round trip).
LOCKS_CTE = """
    locks AS MATERIALIZED (
        SELECT count(*) AS taken FROM (
            SELECT pg_advisory_xact_lock(%(namespace)s, h)
            FROM (SELECT DISTINCT hashtext(k) AS h
                  FROM json_array_elements_text(%(keys)s::json) AS k ORDER BY 1) AS s) AS l)
"""
# The message columns of a rows document, and the insert they feed (rows of `m`, in `m.n` order).
MESSAGE_COLUMNS = "topic text, key text, payload text, headers json, event_id uuid"
INSERT_MESSAGES = """
    INSERT INTO outbox (topic, key, payload, headers, event_id)
    SELECT m.topic, m.key, CAST(m.payload AS json), m.headers, m.event_id
"""

_ENQUEUE = f"""
    WITH {LOCKS_CTE}
    {INSERT_MESSAGES}
    FROM locks, ROWS FROM (json_to_recordset(%(rows)s::json) AS ({MESSAGE_COLUMNS}))
        WITH ORDINALITY AS m(topic, key, payload, headers, event_id, n)
    ORDER BY m.n
"""


async def enqueue(conn: AsyncConnection, messages: Sequence[OutboxMessage]) -> None:
    if messages:
        pg = await driver_connection(conn)
        rows = json_text([message_row(m) for m in messages])
        await pg.execute(_ENQUEUE, {**lock_params(messages), "rows": rows})


def lock_params(messages: Sequence[OutboxMessage]) -> dict[str, Any]:
    """The parameters LOCKS_CTE takes: the keys of `messages`."""
    return {"namespace": KEY_LOCK_NAMESPACE, "keys": json_text([m.key for m in messages])}


def message_row(message: OutboxMessage) -> dict[str, Any]:
    """A message as a row of a rows document (MESSAGE_COLUMNS), with the current trace if
    there is one (sluice/tracing.py)."""
    stamp_traceparent(message.headers)
    return {
        "topic": message.topic,
        "key": message.key,
        "payload": message.payload_json,
        "headers": message.headers,
        "event_id": None if message.event_id is None else str(message.event_id),
    }
