"""`sluice replay store`: put stored events back into the outbox, for when the broker lost them.

Each stored event's outbox message is rebuilt exactly as its ingest built it — same envelope,
same `ce_id` (the event's id) — so consumers that applied it before drop the repeat through
their dedupe records, and those that never saw it apply it once. One replay per source runs at
a time (an advisory lock, as reconcile takes): a second, from the CLI or the console, refuses.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import text

from outbox.enqueue import enqueue
from recovery.lock import run_lock
from recovery.progress import SILENT, Progress
from sluice.db import transaction

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import datetime

    from sqlalchemy.ext.asyncio import AsyncEngine

    from outbox.enqueue import OutboxMessage

BATCH = 500


class NoRebuilderError(Exception):
    """Events of this source cannot be rebuilt into outbox messages (yet)."""


def _square_message(row: Any) -> OutboxMessage:  # noqa: ANN401 - a database row
    from ingest.square_events import square_outbox_message  # noqa: PLC0415
    from schemas.square import SquareEvent  # noqa: PLC0415

    body = bytes(row.body).decode("utf-8")
    envelope = SquareEvent.model_validate_json(body)
    return square_outbox_message(envelope, body, event_id=row.id, received_at=row.received_at)


def _airtable_message(row: Any) -> OutboxMessage | None:  # noqa: ANN401 - a database row
    from ingest.airtable_fetch import record_change_message  # noqa: PLC0415
    from schemas.airtable import RECORD_EVENT  # noqa: PLC0415

    if row.entity_type not in ("record", "table"):
        # A ping only says "fetch"; the fetcher's cursor lives in PostgreSQL, so the record
        # changes it led to are what must be replayed, and any later ping fetches the rest.
        return None
    body = bytes(row.body).decode("utf-8")
    change = RECORD_EVENT.validate_json(body)
    return record_change_message(change, body, row.id, row.received_at)


# A rebuilder returns None for a stored event that has nothing to replay.
REBUILDERS: dict[str, Callable[[Any], OutboxMessage | None]] = {
    "square": _square_message,
    "airtable": _airtable_message,
}


@dataclass(frozen=True, slots=True)
class StoreFilter:
    source: str
    since: datetime | None = None
    until: datetime | None = None
    entity_type: str | None = None
    entity_id: str | None = None

    def params(self) -> dict[str, object]:
        return {
            "source": self.source,
            "since": self.since,
            "until": self.until,
            "entity_type": self.entity_type,
            "entity_id": self.entity_id,
        }


@dataclass(slots=True)
class ReplayResult:
    matched: int = 0
    enqueued: int = 0
    errors: list[dict[str, str]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"matched": self.matched, "enqueued": self.enqueued, "errors": self.errors}


_WHERE = """
    source = :source
    AND (CAST(:since AS timestamptz) IS NULL OR received_at >= CAST(:since AS timestamptz))
    AND (CAST(:until AS timestamptz) IS NULL OR received_at < CAST(:until AS timestamptz))
    AND (CAST(:entity_type AS text) IS NULL OR entity_type = CAST(:entity_type AS text))
    AND (CAST(:entity_id AS text) IS NULL OR entity_id = CAST(:entity_id AS text))
"""
_COUNT = text(f"SELECT count(*) FROM inbound_events WHERE {_WHERE}")  # noqa: S608 - constant SQL
_PAGE = text(
    f"""
    SELECT id, received_at, entity_type, body FROM inbound_events
    WHERE {_WHERE}
      AND (received_at, id) > (CAST(:after_at AS timestamptz), CAST(:after_id AS uuid))
    ORDER BY received_at, id
    LIMIT :limit
    """  # noqa: S608 - constant SQL, values are bound
)
_EPOCH = "-infinity"
_NIL = str(uuid.UUID(int=0))


async def count_matching(engine: AsyncEngine, where: StoreFilter) -> int:
    async with transaction(engine) as conn:
        return int((await conn.execute(_COUNT, where.params())).scalar_one())


async def replay_store(
    engine: AsyncEngine,
    where: StoreFilter,
    *,
    dry_run: bool = False,
    progress: Progress = SILENT,
) -> ReplayResult:
    rebuild = REBUILDERS.get(where.source)
    if rebuild is None:
        raise NoRebuilderError(
            f"replaying {where.source} events is not supported; "
            f"sources that can be replayed: {', '.join(REBUILDERS)}"
        )
    if dry_run:
        return await _replay(engine, where, rebuild, dry_run=True, progress=progress)
    async with run_lock(engine, f"replay:{where.source}"):
        return await _replay(engine, where, rebuild, dry_run=False, progress=progress)


async def _replay(
    engine: AsyncEngine,
    where: StoreFilter,
    rebuild: Callable[[Any], OutboxMessage | None],
    *,
    dry_run: bool,
    progress: Progress,
) -> ReplayResult:
    result = ReplayResult()
    after_at: object = _EPOCH
    after_id = _NIL
    while True:
        async with transaction(engine) as conn:
            rows = list(
                await conn.execute(
                    _PAGE,
                    {**where.params(), "after_at": after_at, "after_id": after_id, "limit": BATCH},
                )
            )
            if not rows:
                break
            messages: list[OutboxMessage] = []
            for row in rows:
                try:
                    message = rebuild(row)
                except ValueError as exc:  # a stored body that no longer parses: report it
                    result.errors.append({"event": str(row.id), "error": str(exc)[:500]})
                    continue
                if message is not None:
                    messages.append(message)
            if not dry_run:
                await enqueue(conn, messages)
        result.matched += len(rows)
        result.enqueued += 0 if dry_run else len(messages)
        progress.advance(len(rows))
        after_at, after_id = rows[-1].received_at, str(rows[-1].id)
    return result
