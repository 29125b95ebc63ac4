"""What a projection sees: consumed messages, and the contract a projection fulfils."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, runtime_checkable

from schemas.origins import ORIGIN_HEADERS, origin_of
from sluice.metrics import MetricName

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Sequence

    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

    from schemas.origins import Origin

T = TypeVar("T")

# What a projection counts of a batch it applied, by metric and label values after `consumer`
# (cells skipped, by kind, say). The runtime adds it to its metrics only once the batch's
# transaction committed, so a batch rolled back and applied again is counted once.
Tally = Counter[tuple[MetricName, tuple[str, ...]]]


@dataclass(frozen=True, slots=True)
class Applied:
    """What a projection reports of a batch it applied: what to count once it commits, and which
    of the items (by their position in the batch) changed nothing because the row already held
    that version or a newer one, with the row's version and the event's. The rest were applied.
    """

    tally: Tally = field(default_factory=Counter)
    stale: dict[int, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ConsumedMessage:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()
    timestamp: int | None = None  # milliseconds since the epoch

    @classmethod
    def from_record(cls, record: Any) -> ConsumedMessage:  # noqa: ANN401 - aiokafka is untyped
        return cls(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key,
            value=record.value,
            headers=tuple(record.headers or ()),
            timestamp=record.timestamp,
        )

    @property
    def published_at(self) -> datetime | None:
        """When the relay published it: the record's timestamp (set by the producer)."""
        if self.timestamp is None:
            return None
        return datetime.fromtimestamp(self.timestamp / 1000, UTC)

    @property
    def origin(self) -> Origin:
        """Where the message came from, as its headers say (schemas/origins.py)."""
        # Only the headers that tell: decoding every header of every message costs a consumer.
        telling = [(name, value) for name, value in self.headers if name in ORIGIN_HEADERS]
        if not telling:
            return "delivered"
        return origin_of({name: value.decode("utf-8", "replace") for name, value in telling})

    @property
    def received_at(self) -> str | None:
        """When sluice received the event, from its `ce_receivedat` header, as ISO 8601 text;
        None when the header is missing or is no timestamp with a zone. With the event id it
        names the event's row in the store, and so its partition (migration 0017)."""
        value = self.header("ce_receivedat")
        if value is None:
            return None
        try:
            at = datetime.fromisoformat(value)
        except ValueError:
            return None
        return at.isoformat() if at.tzinfo is not None else None

    def header(self, name: str) -> str | None:
        for header_name, value in self.headers:
            if header_name == name:
                return value.decode("utf-8", errors="replace")
        return None

    def text_headers(self) -> dict[str, str]:
        return {name: value.decode("utf-8", errors="replace") for name, value in self.headers}


@dataclass(frozen=True, slots=True)
class Decoded(Generic[T]):
    """A message a projection understood: its event id (for dedupe) and what it says."""

    event_id: str
    value: T


class Projection(Protocol[T]):
    """One projection: decode each message (cheap, no I/O), then apply a batch in a transaction."""

    @property
    def name(self) -> str: ...

    @property
    def topics(self) -> tuple[str, ...]: ...

    def decode(self, message: ConsumedMessage) -> Decoded[T] | None:
        """`None`: not for this projection (acknowledged, no effect). Raises InvalidMessageError."""

    async def apply(self, conn: AsyncConnection, items: Sequence[T]) -> Applied | None:
        """Apply decoded, not yet seen messages, in order, inside the caller's transaction;
        returns what to count once it commits and which items were stale, if anything."""


@runtime_checkable
class KnowsSuperseded(Protocol):
    """A projection that can tell, before a batch is applied, which of its items a newer item of
    the same batch will leave stale: their dedupe records are then written stale at once, instead
    of being claimed applied and marked stale by a second statement."""

    def superseded(self, items: Sequence[Any]) -> dict[int, dict[str, Any]]:
        """By position in `items`: what `apply` would report as stale for them (no I/O)."""


@runtime_checkable
class RunsAlongside(Protocol):
    """A projection with work of its own beside the consumer loop (the write-back pusher)."""

    async def run_alongside(self, engine: AsyncEngine, stopping: asyncio.Event) -> None:
        """Run until `stopping` is set."""
