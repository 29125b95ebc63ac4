"""A projection wrapped so its database write runs in spans parented by each message's trace.

Wrapping the projection rather than the runtime keeps tracing out of the consume loop: decode
remembers each message's `traceparent` header next to its value, and apply starts one consumer
span per message (parent: that header) around the wrapped projection's write. A batch shares one
transaction, so its spans share one duration.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

from opentelemetry.trace import Status, StatusCode

from consumers.message import Decoded
from sluice.tracing import TRACEPARENT

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sqlalchemy.ext.asyncio import AsyncConnection

    from consumers.message import Applied, ConsumedMessage, Projection
    from sluice.tracing import Tracing

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Traced(Generic[T]):
    value: T
    topic: str
    traceparent: str | None


class TracedProjection(Generic[T]):
    def __init__(self, inner: Projection[T], tracing: Tracing, group_id: str | None) -> None:
        self._inner = inner
        self._tracing = tracing
        self._group_id = group_id

    @property
    def name(self) -> str:
        return self._inner.name

    @property
    def topics(self) -> tuple[str, ...]:
        return self._inner.topics

    def decode(self, message: ConsumedMessage) -> Decoded[Traced[T]] | None:
        item = self._inner.decode(message)
        if item is None:
            return None
        return Decoded(
            item.event_id, Traced(item.value, message.topic, message.header(TRACEPARENT))
        )

    async def apply(self, conn: AsyncConnection, items: Sequence[Traced[T]]) -> Applied | None:
        spans = [
            self._tracing.consumer_span(
                self.name, topic=item.topic, group=self._group_id, traceparent=item.traceparent
            )
            for item in items
        ]
        try:
            return await self._inner.apply(conn, [item.value for item in items])
        except Exception as exc:
            for span in spans:
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise
        finally:
            for span in spans:
                span.end()
