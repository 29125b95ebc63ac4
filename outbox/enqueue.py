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

from sqlalchemy import text

from sluice.jsontext import json_text

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
# adapting a dozen Python lists to PostgreSQL arrays dominated the ingest hot path.
_LOCK_KEYS = text(
    """
    SELECT pg_advisory_xact_lock(:namespace, h)
    FROM (SELECT DISTINCT hashtext(k) AS h FROM json_array_elements_text(CAST(:keys AS json)) AS k
          ORDER BY 1) AS s
    """
)

_INSERT = text(
    """
    INSERT INTO outbox (topic, key, payload, headers, event_id)
    SELECT m.topic, m.key, CAST(m.payload AS jsonb), m.headers, m.event_id
    FROM ROWS FROM (json_to_recordset(CAST(:rows AS json))
            AS (topic text, key text, payload text, headers jsonb, event_id uuid))
        WITH ORDINALITY AS m(topic, key, payload, headers, event_id, n)
    ORDER BY m.n
    """
)


async def enqueue(conn: AsyncConnection, messages: Sequence[OutboxMessage]) -> None:
    if not messages:
        return
    await conn.execute(
        _LOCK_KEYS,
        {"namespace": KEY_LOCK_NAMESPACE, "keys": json_text([m.key for m in messages])},
    )
    rows = [
        {
            "topic": m.topic,
            "key": m.key,
            "payload": m.payload_json,
            "headers": m.headers,
            "event_id": None if m.event_id is None else str(m.event_id),
        }
        for m in messages
    ]
    await conn.execute(_INSERT, {"rows": json_text(rows)})
