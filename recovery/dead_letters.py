"""`sluice dlq`: list dead letters, redrive them onto their original topic, or discard them.

A redrive writes an outbox row with the original key, value and headers (so it travels through
the relay like every other message, after the commit) and marks the dead letter redriven, in
one transaction. The message keeps its `ce_id`: a consumer that somehow applied it already
drops it; one that dead-lettered it never recorded it, so it applies it now. A discard marks it
discarded with a reason and puts nothing back. Either is done once (a dead letter redriven or
discarded is no longer pending) and is written to the audit log in its own transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import text

from outbox.enqueue import OutboxMessage, enqueue
from schemas.origins import REDRIVE_HEADER
from sluice.audit import write_audit
from sluice.db import transaction

if TYPE_CHECKING:
    from datetime import datetime

    from sqlalchemy.ext.asyncio import AsyncEngine

_LIST = text(
    """
    SELECT id, consumer, topic, partition, "offset", event_id, error_type, error, created_at,
           redriven_at, redriven_by, discarded_at, discarded_by, discard_reason
    FROM dead_letters
    WHERE (CAST(:pending AS boolean) IS FALSE OR (redriven_at IS NULL AND discarded_at IS NULL))
      AND (CAST(:consumer AS text) IS NULL OR consumer = CAST(:consumer AS text))
    ORDER BY id
    LIMIT :limit
    """
)
_PICK = text(
    """
    SELECT id, topic, key, value, headers FROM dead_letters
    WHERE redriven_at IS NULL AND discarded_at IS NULL
      AND (CAST(:id AS bigint) IS NULL OR id = CAST(:id AS bigint))
      AND (CAST(:consumer AS text) IS NULL OR consumer = CAST(:consumer AS text))
    ORDER BY id
    FOR UPDATE SKIP LOCKED
    """
)
_ONE = text(
    """
    SELECT id, consumer, topic, partition, "offset", event_id, error_type, error, created_at,
           redriven_at, redriven_by, discarded_at, discarded_by, discard_reason, key, value, headers
    FROM dead_letters WHERE id = :id
    """
)
_MARK = text("UPDATE dead_letters SET redriven_at = now(), redriven_by = :actor WHERE id = :id")
_DISCARD = text(
    "UPDATE dead_letters SET discarded_at = now(), discarded_by = :actor, discard_reason = :reason"
    " WHERE id = :id"
)


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
    redriven_by: str | None
    discarded_at: datetime | None
    discarded_by: str | None
    discard_reason: str | None

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
            "redriven_at": _iso(self.redriven_at),
            "redriven_by": self.redriven_by,
            "discarded_at": _iso(self.discarded_at),
            "discarded_by": self.discarded_by,
            "discard_reason": self.discard_reason,
        }


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


@dataclass(slots=True)
class RedriveResult:
    redriven: list[int]
    errors: list[dict[str, Any]]

    def as_json(self) -> dict[str, Any]:
        return {"redriven": self.redriven, "errors": self.errors}


@dataclass(slots=True)
class DiscardResult:
    discarded: list[int]

    def as_json(self) -> dict[str, Any]:
        return {"discarded": self.discarded}


async def list_dead_letters(
    engine: AsyncEngine,
    *,
    pending_only: bool = True,
    limit: int = 100,
    consumer: str | None = None,
) -> list[DeadLetterRow]:
    async with transaction(engine) as conn:
        params = {"pending": pending_only, "limit": limit, "consumer": consumer}
        rows = await conn.execute(_LIST, params)
        return [DeadLetterRow(*row) for row in rows]


async def read_dead_letter(
    engine: AsyncEngine, dead_letter_id: int
) -> tuple[DeadLetterRow, dict[str, Any]] | None:
    """One dead letter, and the message it holds: key, value and headers as text."""
    async with transaction(engine) as conn:
        row = (await conn.execute(_ONE, {"id": dead_letter_id})).first()
    if row is None:
        return None
    message = {
        "key": None if row.key is None else bytes(row.key).decode("utf-8", errors="replace"),
        "value": None if row.value is None else bytes(row.value).decode("utf-8", errors="replace"),
        "headers": dict(row.headers),
    }
    return DeadLetterRow(*row[:14]), message


async def _pending_ids(
    engine: AsyncEngine, dead_letter_id: int | None, consumer: str | None
) -> list[int]:
    async with transaction(engine) as conn:
        params = {"id": dead_letter_id, "consumer": consumer}
        return [row.id for row in await conn.execute(_PICK, params)]


async def redrive(
    engine: AsyncEngine, dead_letter_id: int | None, *, actor: str, consumer: str | None = None
) -> RedriveResult:
    """Redrive one dead letter (by id) or every pending one (`None`; of one consumer group if
    given), each in its own transaction, so one that cannot be put back does not hold up the
    rest."""
    result = RedriveResult([], [])
    for letter_id in await _pending_ids(engine, dead_letter_id, consumer):
        try:
            async with transaction(engine) as conn:
                row = (await conn.execute(_PICK, {"id": letter_id, "consumer": None})).one_or_none()
                if row is None:  # redriven or discarded meanwhile by someone else
                    continue
                await enqueue(conn, [_message(row)])
                await conn.execute(_MARK, {"id": letter_id, "actor": actor})
                await write_audit(conn, actor, "dlq.redrive", f"dead_letter:{letter_id}", {})
        except Exception as exc:  # noqa: BLE001 - isolated to its dead letter, reported
            result.errors.append({"id": letter_id, "error": f"{type(exc).__name__}: {exc}"[:500]})
        else:
            result.redriven.append(letter_id)
    return result


async def discard(
    engine: AsyncEngine,
    dead_letter_id: int | None,
    *,
    reason: str,
    actor: str,
    consumer: str | None = None,
) -> DiscardResult:
    """Discard one dead letter (by id) or every pending one (`None`; of one consumer group if
    given): nothing is put back; the reason is kept with it and in the audit log."""
    if not reason.strip():
        raise ValueError("a discard needs a reason")
    result = DiscardResult([])
    for letter_id in await _pending_ids(engine, dead_letter_id, consumer):
        async with transaction(engine) as conn:
            pick = {"id": letter_id, "consumer": None}
            if (await conn.execute(_PICK, pick)).one_or_none() is None:
                continue
            params = {"id": letter_id, "actor": actor, "reason": reason}
            await conn.execute(_DISCARD, params)
            detail = {"reason": reason}
            await write_audit(conn, actor, "dlq.discard", f"dead_letter:{letter_id}", detail)
        result.discarded.append(letter_id)
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
