"""What a projection sees: consumed messages, and the contract a projection fulfils."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, runtime_checkable

from sluice.metrics import MetricName

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Sequence

    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

T = TypeVar("T")

# What a projection counts of a batch it applied, by metric and label values after `consumer`
# (cells skipped, by kind, say). The runtime adds it to its metrics only once the batch's
# transaction committed, so a batch rolled back and applied again is counted once.
Tally = Counter[tuple[MetricName, tuple[str, ...]]]


@dataclass(frozen=True, slots=True)
class ConsumedMessage:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()

    @classmethod
    def from_record(cls, record: Any) -> ConsumedMessage:  # noqa: ANN401 - aiokafka is untyped
        return cls(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key,
            value=record.value,
            headers=tuple(record.headers or ()),
        )

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

    async def apply(self, conn: AsyncConnection, items: Sequence[T]) -> Tally | None:
        """Apply decoded, not yet seen messages, in order, inside the caller's transaction;
        returns what to count once it commits, if anything."""


@runtime_checkable
class RunsAlongside(Protocol):
    """A projection with work of its own beside the consumer loop (the write-back pusher)."""

    async def run_alongside(self, engine: AsyncEngine, stopping: asyncio.Event) -> None:
        """Run until `stopping` is set."""
