"""`sluice consume airtable-writeback`: staff changes to leads, pushed back to Airtable.

Two halves in one process. The projection consumes `app.changes` on the consumer runtime (dedupe,
dead letters, offsets after commit) and marks each changed lead pending in `lead_sync`, in the
batch's transaction. The pusher (consumers/writeback_pusher.py) runs alongside it, woken by
the NOTIFY that marking a lead pending sends, and talks to Airtable outside any transaction, so
a 30-second pause after a 429 never holds a database transaction or a Kafka batch open.

The App API marks a lead pending itself when staff change it, so its sync status reads
"pending" at once; the message then makes sure of it, and replaying `app.changes` (or a
dead-letter redrive) asks for the push again.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from pydantic import ValidationError

from consumers.errors import InvalidMessageError
from consumers.lead_sync import mark_pending
from consumers.message import Decoded
from consumers.writeback_metrics import WritebackMetrics
from consumers.writeback_pusher import PusherConfig, WritebackPusher
from schemas.app_api import AppChange
from schemas.envelope import CloudEvent
from schemas.topics import CONSUMER_TOPICS, Topic
from sluice.listen import CommitListener

if TYPE_CHECKING:
    from collections.abc import Sequence

    from prometheus_client import CollectorRegistry
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

    from consumers.message import ConsumedMessage
    from providers.airtable import AirtableClient
    from sluice.resilience import CircuitBreaker, StateHook
    from sluice.settings import Settings
    from sluice.tracing import Tracing

WRITEBACK_CHANNEL = "sluice_writeback"


class AirtableWriteback:
    def __init__(  # noqa: PLR0913 - the consumer's parts, by keyword after the first two
        self,
        client: AirtableClient,
        breaker: CircuitBreaker,
        *,
        database_url: str | None = None,
        topics: Sequence[str] = CONSUMER_TOPICS["airtable-writeback"],
        config: PusherConfig | None = None,
        metrics: WritebackMetrics | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self._client = client
        self._metrics = metrics
        self._tracing = tracing
        self._breaker = breaker
        self._database_url = database_url
        self._topics = tuple(topics)
        self._config = config
        self.pusher: WritebackPusher | None = None

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        topics: Sequence[str] = (),
        *,
        on_breaker_change: StateHook | None = None,
        registry: CollectorRegistry | None = None,
        tracing: Tracing | None = None,
    ) -> AirtableWriteback:
        from providers.airtable import AirtableClient, breaker  # noqa: PLC0415 - needs pyairtable

        return cls(
            AirtableClient.from_settings(settings),
            breaker(settings, on_change=on_breaker_change),
            database_url=settings.require_database_url(),
            topics=tuple(topics) or (Topic.APP_CHANGES.value,),
            metrics=WritebackMetrics(registry),
            tracing=tracing,
        )

    @property
    def name(self) -> str:
        return "airtable-writeback"

    @property
    def topics(self) -> tuple[str, ...]:
        return self._topics

    def decode(self, message: ConsumedMessage) -> Decoded[str] | None:
        if message.value is None:
            raise InvalidMessageError("message has no value")
        try:
            event = CloudEvent[AppChange].model_validate_json(message.value)
        except ValidationError as exc:
            raise InvalidMessageError(f"not an app change: {exc}") from exc
        if event.data.entity != "leads":
            return None  # jobs belong to Square, which is never written to
        return Decoded(event.id, event.data.id)

    async def apply(self, conn: AsyncConnection, items: Sequence[str]) -> None:
        await mark_pending(conn, items)

    async def run_alongside(self, engine: AsyncEngine, stopping: asyncio.Event) -> None:
        """The pusher, for as long as the consumer runs."""
        self.pusher = WritebackPusher(
            engine,
            self._client,
            self._breaker,
            self._config,
            metrics=self._metrics,
            tracing=self._tracing,
        )
        listener_task: asyncio.Task[None] | None = None
        relay_task: asyncio.Task[None] | None = None
        if self._database_url is not None:
            listener = CommitListener(
                self._database_url, WRITEBACK_CHANNEL, "sluice-writeback-listen"
            )
            listener_task = asyncio.create_task(listener.run())
            relay_task = asyncio.create_task(_forward(listener.wake, self.pusher.wake))
        try:
            await self.pusher.run(stopping)
        finally:
            for task in (listener_task, relay_task):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task


async def _forward(source: asyncio.Event, target: asyncio.Event) -> None:
    while True:
        await source.wait()
        source.clear()
        target.set()
