"""`sluice dlq`: list dead letters, and redrive them onto their original topic.

A redrive writes an outbox row with the original key, value and headers (so it travels through
the relay like every other message, after the commit) and marks the dead letter redriven, in
one transaction. The message keeps its `ce_id`: a consumer that somehow applied it already
drops it; one that dead-lettered it never recorded it, so it applies it now.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import text

from outbox.enqueue import OutboxMessage, enqueue
from sluice.db import transaction

if TYPE_CHECKING:
    from datetime import datetime

    from sqlalchemy.ext.asyncio import AsyncEngine

REDRIVE_HEADER = "sluice-redrive-of"

_LIST = text(
    """
    SELECT id, consumer, topic, partition, "offset", event_id, error_type, error, created_at,
           redriven_at
    FROM dead_letters
    WHERE CAST(:pending AS boolean) IS FALSE OR redriven_at IS NULL
    ORDER BY id
    LIMIT :limit
    """
)
_PICK = text(
    """
    SELECT id, topic, key, value, headers FROM dead_letters
    WHERE redriven_at IS NULL AND (CAST(:id AS bigint) IS NULL OR id = CAST(:id AS bigint))
    ORDER BY id
    FOR UPDATE SKIP LOCKED
    """
)
_MARK = text("UPDATE dead_letters SET redriven_at = now() WHERE id = :id")


@dataclass(frozen=True, slots=True)
class DeadLetterRow:
    id: int
    consumer: str
    topic: str
    partition: int
    offset: int
    event_id: str | None
    error_type: str
    error: str
    created_at: datetime
    redriven_at: datetime | None

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "consumer": self.consumer,
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "event_id": self.event_id,
            "error_type": self.error_type,
            "error": self.error,
            "created_at": self.created_at.isoformat(),
            "redriven_at": None if self.redriven_at is None else self.redriven_at.isoformat(),
        }


@dataclass(slots=True)
class RedriveResult:
    redriven: list[int]
    errors: list[dict[str, Any]]

    def as_json(self) -> dict[str, Any]:
        return {"redriven": self.redriven, "errors": self.errors}


async def list_dead_letters(
    engine: AsyncEngine, *, pending_only: bool = True, limit: int = 100
) -> list[DeadLetterRow]:
    async with transaction(engine) as conn:
        rows = await conn.execute(_LIST, {"pending": pending_only, "limit": limit})
        return [DeadLetterRow(*row) for row in rows]


async def redrive(engine: AsyncEngine, dead_letter_id: int | None) -> RedriveResult:
    """Redrive one dead letter (by id) or all not yet redriven (`None`), each in its own
    transaction, so one that cannot be put back does not hold up the rest."""
    async with transaction(engine) as conn:
        ids = [row.id for row in await conn.execute(_PICK, {"id": dead_letter_id})]
    result = RedriveResult([], [])
    for letter_id in ids:
        try:
            async with transaction(engine) as conn:
                row = (await conn.execute(_PICK, {"id": letter_id})).one_or_none()
                if row is None:  # redriven meanwhile by someone else
                    continue
                await enqueue(conn, [_message(row)])
                await conn.execute(_MARK, {"id": letter_id})
        except Exception as exc:  # noqa: BLE001 - isolated to its dead letter, reported
            result.errors.append({"id": letter_id, "error": f"{type(exc).__name__}: {exc}"[:500]})
        else:
            result.redriven.append(letter_id)
    return result


def _message(row: Any) -> OutboxMessage:  # noqa: ANN401 - a database row
    if row.value is None:
        raise ValueError("the dead letter has no value to redrive")
    headers = {k: v for k, v in dict(row.headers).items() if not k.startswith("dlq_")}
    headers[REDRIVE_HEADER] = str(row.id)
    key = bytes(row.key).decode("utf-8") if row.key is not None else headers.get("ce_id", "")
    # The outbox stores payloads as JSON; a value that is not JSON fails here, on its own.
    return OutboxMessage(
        topic=row.topic, key=key, payload_json=bytes(row.value).decode("utf-8"), headers=headers
    )
