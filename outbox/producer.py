"""The relay's Kafka side: an aiokafka producer, and the boundary where its errors become ours.

Sends are batched: every record of a batch is handed to aiokafka first, then the acknowledgements
are awaited together. aiokafka keeps one request in flight per partition, so records of one key
(one partition) are appended in the order they were handed over. With the idempotent producer the
broker also refuses a gap: if an earlier batch of a partition was lost, later ones fail too
instead of overtaking it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import (
    InvalidTopicError,
    KafkaError,
    MessageSizeTooLargeError,
    RecordTooLargeError,
    TopicAuthorizationFailedError,
)
from aiokafka.partitioner import murmur2

from sluice.errors import InvalidInputError, TransientError

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

# The broker refuses these records or this client: retrying the same send cannot succeed
# until an operator acts, but the rows must still stay in the outbox.
_REFUSED = (
    MessageSizeTooLargeError,
    RecordTooLargeError,
    InvalidTopicError,
    TopicAuthorizationFailedError,
)


class KafkaUnavailableError(TransientError):
    """The broker could not be reached or did not acknowledge in time: retry later."""


class PublishRefusedError(InvalidInputError):
    """The broker refused the records (too large, not authorised, ...): sending them again as
    they are cannot succeed. The relay keeps the rows (nothing is dropped) until someone acts."""


class TopicMissingError(TransientError):
    """A row's topic does not exist yet; the relay never lets the broker create it by accident,
    and retries until `sluice topics ensure` has made it."""


def wrap_kafka_error(exc: BaseException) -> Exception:
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, _REFUSED):
        return PublishRefusedError(text)
    return KafkaUnavailableError(text)


def _is_kafka_failure(exc: BaseException) -> bool:
    return isinstance(exc, KafkaError | OSError | TimeoutError)


@dataclass(frozen=True, slots=True)
class OutboxRecord:
    id: int
    bucket: int
    topic: str
    key: str
    value: bytes
    headers: list[tuple[str, bytes]]
    created_at: float  # the row's insert, as a Unix timestamp (for the publish lag)


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    acked: list[OutboxRecord]
    error: Exception | None  # the first failure, already wrapped; None if every record was acked
    acked_at: list[float] = field(default_factory=list)  # per acked record: when its ack arrived


_Submitted = list[tuple[list[OutboxRecord], "asyncio.Future[object]"]]


class Delivery:
    """Records handed to aiokafka, one chain of batches per partition; `result()` waits for
    the broker's answers."""

    def __init__(
        self,
        records: Sequence[OutboxRecord],
        chains: Sequence[asyncio.Task[_Submitted]],
        answered_at: dict[int, float],
    ) -> None:
        self.records = records
        self._chains = chains
        self._answered_at = answered_at  # id(future) -> wall-clock time its answer arrived

    async def result(self, wait_seconds: float) -> DeliveryResult:
        deadline = asyncio.get_running_loop().time() + wait_seconds
        error: Exception | None = None
        submitted: _Submitted = []
        if self._chains:
            await asyncio.wait(self._chains, timeout=wait_seconds)
        for chain in self._chains:
            if not chain.done():
                chain.cancel()
                error = error or KafkaUnavailableError("records not accepted in time")
            elif (exc := chain.exception()) is not None:
                error = error or _as_relay_error(exc)
            else:
                submitted.extend(chain.result())
        futures = [future for _, future in submitted]
        if futures:
            remaining = max(0.0, deadline - asyncio.get_running_loop().time())
            await asyncio.wait(futures, timeout=remaining)
        acked: list[OutboxRecord] = []
        acked_at: list[float] = []
        for records, future in submitted:
            if not future.done():
                future.cancel()
                error = error or KafkaUnavailableError("no acknowledgement in time")
            elif (exc := future.exception()) is not None:
                error = error or _as_relay_error(exc)
            else:
                acked.extend(records)
                acked_at.extend([self._answered_at.get(id(future), time.time())] * len(records))
        return DeliveryResult(acked, error, acked_at)


def _as_relay_error(exc: BaseException) -> Exception:
    if isinstance(exc, KafkaUnavailableError | PublishRefusedError):
        return exc
    if _is_kafka_failure(exc):
        return wrap_kafka_error(exc)
    raise exc


class _KeyPartitions:
    """Kafka's default key → partition mapping (murmur2, as the Java client), memoised: the
    pure-Python hash would otherwise cost more than the rest of a record's send."""

    def __init__(self, limit: int = 100_000) -> None:
        self._hashes: dict[bytes, int] = {}
        self._limit = limit

    def partition(self, key: bytes, partitions: Sequence[int]) -> int:
        hashed = self._hashes.get(key)
        if hashed is None:
            if len(self._hashes) >= self._limit:
                self._hashes.clear()
            hashed = self._hashes[key] = murmur2(key) & 0x7FFFFFFF
        return partitions[hashed % len(partitions)]


class OutboxProducer:
    def __init__(
        self,
        bootstrap_servers: str,
        *,
        idempotence: bool,
        request_timeout_ms: int,
        client_id: str = "sluice-relay",
    ) -> None:
        self._bootstrap = bootstrap_servers
        self._idempotence = idempotence
        self._request_timeout_ms = request_timeout_ms
        self._client_id = client_id
        self._producer: AIOKafkaProducer | None = None
        self._admin: AIOKafkaAdminClient | None = None
        self._known_topics: set[str] = set()
        self._keys = _KeyPartitions()

    @property
    def delivery_timeout(self) -> float:
        """Longest a send can take to resolve: metadata wait, queueing, then the request."""
        return 3 * self._request_timeout_ms / 1000

    async def start(self) -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=self._bootstrap,
            client_id=self._client_id,
            acks="all",
            enable_idempotence=self._idempotence,
            request_timeout_ms=self._request_timeout_ms,
            linger_ms=0,
            max_batch_size=512 * 1024,  # under the broker's default 1 MiB per batch
            max_request_size=4 * 1024 * 1024,
            retry_backoff_ms=100,
        )
        admin = AIOKafkaAdminClient(
            bootstrap_servers=self._bootstrap,
            client_id=f"{self._client_id}-admin",
            request_timeout_ms=self._request_timeout_ms,
        )
        # Held before starting, so a failed start is closed too (aiokafka warns otherwise).
        self._producer, self._admin = producer, admin
        try:
            await producer.start()
            await admin.start()
        except Exception as exc:
            await self.stop()
            if _is_kafka_failure(exc):
                raise wrap_kafka_error(exc) from exc
            raise

    async def stop(self) -> None:
        """Close both clients; records still queued in aiokafka fail rather than linger."""
        producer, admin = self._producer, self._admin
        self._producer = self._admin = None
        self._known_topics.clear()
        if producer is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.delivery_timeout):
                    await producer.stop()
        if admin is not None:
            with contextlib.suppress(Exception):
                await admin.close()

    @property
    def started(self) -> bool:
        return self._producer is not None

    async def check_topics(self, topics: Iterable[str]) -> None:
        """Raise TopicMissingError unless every topic exists. Sending to a missing topic would
        make a broker with auto-creation create it with its default partition count."""
        wanted = set(topics)
        if wanted <= self._known_topics:
            return
        if self._admin is None:
            raise KafkaUnavailableError("producer not started")
        try:
            existing = set(await self._admin.list_topics())
        except Exception as exc:
            if _is_kafka_failure(exc):
                raise wrap_kafka_error(exc) from exc
            raise
        self._known_topics = existing
        if missing := wanted - existing:
            raise TopicMissingError(", ".join(sorted(missing)))

    async def send(self, records: Sequence[OutboxRecord]) -> Delivery:
        """Hand every record to aiokafka without waiting for acknowledgements.

        Records are grouped by partition, keeping their order, and packed into record batches
        directly (aiokafka's batch API): per-record `send()` costs more than everything else
        the relay does with a row. Each partition's batches are submitted in order by one task;
        aiokafka keeps one request in flight per partition, so they are appended in that order.
        """
        producer = self._producer
        if producer is None:
            raise KafkaUnavailableError("producer not started")
        groups: dict[tuple[str, int], list[OutboxRecord]] = {}
        partitions: dict[str, list[int]] = {}
        try:
            for record in records:
                if (known := partitions.get(record.topic)) is None:
                    known = partitions[record.topic] = sorted(
                        await producer.partitions_for(record.topic)
                    )
                partition = self._keys.partition(record.key.encode(), known)
                groups.setdefault((record.topic, partition), []).append(record)
        except Exception as exc:
            if _is_kafka_failure(exc):
                raise wrap_kafka_error(exc) from exc
            raise
        answered_at: dict[int, float] = {}
        chains = [
            asyncio.create_task(self._submit(producer, topic, partition, group, answered_at))
            for (topic, partition), group in groups.items()
        ]
        return Delivery(records, chains, answered_at)

    @staticmethod
    async def _submit(
        producer: AIOKafkaProducer,
        topic: str,
        partition: int,
        records: list[OutboxRecord],
        answered_at: dict[int, float],
    ) -> _Submitted:
        def note_answer(future: asyncio.Future[object]) -> None:
            answered_at[id(future)] = time.time()

        async def send(batch: Any) -> asyncio.Future[object]:  # noqa: ANN401 - aiokafka's batch builder
            future: asyncio.Future[object] = await producer.send_batch(
                batch, topic, partition=partition
            )
            future.add_done_callback(note_answer)
            return future

        submitted: _Submitted = []
        batch, batch_records = producer.create_batch(), []
        for record in records:
            key = record.key.encode()
            # timestamp None: the builder stamps the publish time.
            if batch.append(key=key, value=record.value, timestamp=None, headers=record.headers):
                batch_records.append(record)
                continue
            if not batch_records:
                raise PublishRefusedError(f"outbox row {record.id} does not fit in a batch")
            submitted.append((batch_records, await send(batch)))
            batch, batch_records = producer.create_batch(), [record]
            if not batch.append(
                key=key, value=record.value, timestamp=None, headers=record.headers
            ):
                raise PublishRefusedError(f"outbox row {record.id} does not fit in a batch")
        if batch_records:
            submitted.append((batch_records, await send(batch)))
        return submitted
