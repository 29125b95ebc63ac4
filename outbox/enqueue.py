"""Writing outbox rows: the only way any component announces a change.

Callers pass the connection of the transaction that makes the change, so the message exists if and
only if the change committed. Before inserting, the transaction takes a transaction-scoped advisory
lock per message key (in a fixed order, so writers never deadlock). Two transactions that write the
same key therefore run one after the other, and the outbox id order of a key is its commit order:
the relay can publish a key's rows by id and still follow commit order.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import text

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
        return cls(
            topic, key, json.dumps(payload, separators=(",", ":")), dict(headers or {}), event_id
        )


_LOCK_KEYS = text(
    """
    SELECT pg_advisory_xact_lock(:namespace, h)
    FROM (SELECT DISTINCT hashtext(k) AS h FROM unnest(CAST(:keys AS text[])) AS k ORDER BY 1) AS s
    """
)

_INSERT = text(
    """
    INSERT INTO outbox (topic, key, payload, headers, event_id)
    SELECT t, k, CAST(p AS jsonb), CAST(h AS jsonb), e
    FROM unnest(
        CAST(:topics AS text[]), CAST(:keys AS text[]), CAST(:payloads AS text[]),
        CAST(:headers AS text[]), CAST(:event_ids AS uuid[])
    ) WITH ORDINALITY AS m(t, k, p, h, e, n)
    ORDER BY n
    """
)


async def enqueue(conn: AsyncConnection, messages: Sequence[OutboxMessage]) -> None:
    if not messages:
        return
    keys = [m.key for m in messages]
    await conn.execute(_LOCK_KEYS, {"namespace": KEY_LOCK_NAMESPACE, "keys": keys})
    await conn.execute(
        _INSERT,
        {
            "topics": [m.topic for m in messages],
            "keys": keys,
            "payloads": [m.payload_json for m in messages],
            "headers": [json.dumps(m.headers, separators=(",", ":")) for m in messages],
            "event_ids": [m.event_id for m in messages],
        },
    )
