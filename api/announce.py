"""The outbox message every App API change writes in its own transaction (`app.changes`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from outbox.enqueue import OutboxMessage, enqueue
from schemas.app_api import AppChange
from schemas.envelope import CloudEvent
from schemas.topics import Topic
from sluice.ids import new_event_id

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sqlalchemy.ext.asyncio import AsyncConnection

SOURCE = "sluice/app-api"


def change_message(change: AppChange, idempotency_key: str) -> OutboxMessage:
    event = CloudEvent[AppChange](
        id=str(new_event_id()),
        source=SOURCE,
        type=f"app.{change.entity}.changed",
        subject=change.id,
        time=change.changed_at,
        data=change,
        providereventid=idempotency_key,
        receivedat=change.changed_at,
        entitytype=change.entity,
    )
    return OutboxMessage(
        Topic.APP_CHANGES.value,
        f"{change.entity}/{change.id}",
        event.model_dump_json(),
        event.kafka_headers(),
    )


async def announce(conn: AsyncConnection, messages: Sequence[OutboxMessage]) -> None:
    await enqueue(conn, messages)
