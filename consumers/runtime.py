"""The consumer runtime: Kafka in, one database transaction per batch, offsets after the commit.

For each `getmany` batch:

1. decode every message (no I/O); one that cannot be decoded is a dead letter. This happens
   while the batch before is still being applied, and whatever arrives meanwhile joins the batch;
2. in ONE transaction: record the event ids (consumer_dedupe), apply the new ones, store the
   dead letters, commit. If the batch fails for a reason that is not an outage, that transaction
   is rolled back and a second one applies message by message, each in its own savepoint, so a
   poison message becomes a dead letter without taking its neighbours with it. The dead-letter
   budget is checked before anything commits;
3. send the dead letters to `<topic>.dlq` and wait for the broker's acknowledgement;
4. commit the offsets; only then does the next batch's transaction begin.

A crash anywhere before step 4 redelivers the batch; the dedupe records committed in step 2 make
the redelivery a no-op, so every event has its effect once. Database and broker failures are
retried with capped exponential backoff; the batch stays in memory meanwhile.

What a failure calls for is read off its type (sluice/errors.py): a `TransientError` (the
database, the broker or a provider down) retries the batch; an `InvalidInputError` (or a
pydantic validation error) dead-letters the message. Anything else is a bug in sluice: the
message is dead-lettered too, so one message cannot stop the consumer for good, and the
dead-letter budget bounds how many go that way, but it is logged as `consumer.bug` with its
traceback and its dead letter's error type reads `bug:<class>`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from aiokafka.structs import OffsetAndMetadata
from pydantic import ValidationError

from consumers.dead_letters import DeadLetter, DeadLetterBudget, record_dead_letters
from consumers.dedupe import claim_events, correct_outcomes
from consumers.journey import Outcome, record_outcomes
from consumers.message import ConsumedMessage, Decoded, KnowsSuperseded
from outbox.producer import KafkaUnavailableError
from sluice.db import savepoint, transaction
from sluice.errors import InvalidInputError, TransientError
from sluice.gc_policy import freeze_startup_objects
from sluice.pause import PauseWatch, consumer_component
from sluice.resilience import Backoff

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

    from consumers.message import Projection, Tally
    from sluice.settings import Settings

log = structlog.get_logger(__name__)

T = TypeVar("T")
R = TypeVar("R")

_RETRY_FIRST_SECONDS = 0.1


@dataclass(frozen=True, slots=True)
class ConsumerConfig:
    bootstrap_servers: str
    group_id: str
    batch_max: int = 500
    fetch_wait_ms: int = 20
    poll_ms: int = 200
    session_timeout_ms: int = 10_000
    rebalance_timeout_ms: int = 10_000
    dlq_max_ratio: float = 0.1
    dlq_window: int = 1000
    retry_max_seconds: float = 30.0
    # Bounded waits: for the batch in flight when partitions are revoked, and at stop.
    drain_timeout_seconds: float = 10.0
    pause_check_seconds: float = 30.0  # the pause flag's fallback poll (sluice/pause.py)

    @classmethod
    def from_settings(
        cls, settings: Settings, consumer: str, *, group_id: str | None = None
    ) -> ConsumerConfig:
        return cls(
            bootstrap_servers=settings.require_kafka(),
            group_id=group_id or f"{settings.consumer_group_prefix}{consumer}",
            batch_max=settings.consumer_batch_max,
            fetch_wait_ms=settings.consumer_fetch_wait_ms,
            session_timeout_ms=settings.consumer_session_timeout_ms,
            rebalance_timeout_ms=settings.consumer_session_timeout_ms,
            dlq_max_ratio=settings.dlq_max_ratio,
            dlq_window=settings.dlq_window,
            retry_max_seconds=settings.consumer_retry_max_seconds,
            drain_timeout_seconds=settings.consumer_session_timeout_ms / 1000,
        )


@dataclass(slots=True)
class ConsumerStats:
    batches: int = 0
    messages: int = 0
    applied: int = 0  # stale ones included: their event is applied, with no effect on the row
    stale: int = 0
    duplicates: int = 0
    ignored: int = 0
    dead_lettered: int = 0
    failures: int = 0  # transient failures retried; exported by consumers/observe.py
    tally: Tally = field(default_factory=Counter)  # the projection's own counts


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    applied: int
    duplicates: int
    ignored: int
    dead: list[DeadLetter]
    tally: Tally = field(default_factory=Counter)
    stale: int = 0  # of those applied: the row already held that version or a newer one


@dataclass(slots=True)
class _Claimed:
    """What claiming and applying some messages came to: how many were applied (the stale among
    them counted too), and the duplicates, whose outcome no dedupe record holds."""

    applied: int = 0
    stale: int = 0
    duplicates: list[Outcome] = field(default_factory=list)
    tally: Tally = field(default_factory=Counter)

    def add(self, other: _Claimed) -> None:
        self.applied += other.applied
        self.stale += other.stale
        self.duplicates += other.duplicates
        self.tally.update(other.tally)


@dataclass(slots=True)
class _Prepared(Generic[T]):
    """A batch decoded and ready to apply: messages in fetch order, each partition's in offset
    order, and what the projection made of them."""

    messages: list[ConsumedMessage]
    decoded: list[tuple[ConsumedMessage, Decoded[T]]] = field(default_factory=list)
    undecodable: list[DeadLetter] = field(default_factory=list)
    ignored: list[ConsumedMessage] = field(default_factory=list)  # not for this projection

    def extend(self, later: _Prepared[T]) -> None:
        self.messages += later.messages
        self.decoded += later.decoded
        self.undecodable += later.undecodable
        self.ignored += later.ignored

    def only(self, partitions: set[TopicPartition]) -> _Prepared[T]:
        def kept(m: ConsumedMessage) -> bool:
            return TopicPartition(m.topic, m.partition) in partitions

        if all(kept(m) for m in self.messages):
            return self
        return _Prepared(
            [m for m in self.messages if kept(m)],
            [(m, item) for m, item in self.decoded if kept(m)],
            [letter for letter in self.undecodable if kept(letter.message)],
            [m for m in self.ignored if kept(m)],
        )


def _messages(records: dict[TopicPartition, list[Any]]) -> list[ConsumedMessage]:
    return [
        ConsumedMessage.from_record(record)
        for tp in sorted(records, key=lambda tp: (tp.topic, tp.partition))
        for record in records[tp]
    ]


class _StoppingError(Exception):
    """Stop was requested while a step was waiting to be retried; nothing was committed."""


Verdict = Literal["retry", "invalid", "bug"]


def verdict(exc: Exception) -> Verdict:
    """What a failure to decode or apply a message calls for (see the module docstring)."""
    if isinstance(exc, TransientError):
        return "retry"
    if isinstance(exc, InvalidInputError | ValidationError):
        return "invalid"
    return "bug"


async def _kafka_start(client: AIOKafkaConsumer | AIOKafkaProducer) -> None:
    await _kafka("start", client.start())


async def _kafka(step: str, call: Awaitable[R]) -> R:
    """The broker's errors as ours: any failure of a start, a send or a commit is an outage."""
    try:
        return await call
    except (KafkaError, OSError) as exc:
        raise KafkaUnavailableError(f"{step} failed: {exc}") from exc


class ConsumerRuntime(Generic[T]):
    def __init__(
        self, projection: Projection[T], engine: AsyncEngine, config: ConsumerConfig
    ) -> None:
        self.projection = projection
        self.config = config
        self.stats = ConsumerStats()
        self.assigned = asyncio.Event()  # set once the group has given us partitions
        self._engine = engine
        self._budget = DeadLetterBudget(config.dlq_max_ratio, config.dlq_window)
        self._stopping = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._log = log.bind(consumer=projection.name, group_id=config.group_id)
        self.pause = PauseWatch(
            engine, consumer_component(projection.name), every_seconds=config.pause_check_seconds
        )

    @property
    def name(self) -> str:
        return self.projection.name

    @property
    def stopping(self) -> asyncio.Event:
        return self._stopping

    def stop(self) -> None:
        """Finish the batch in flight, commit it, leave the group. Safe from a signal handler."""
        self._stopping.set()

    async def run(self) -> None:
        """Consume until `stop()`. Raises DeadLetterLimitError when the DLQ budget is spent."""
        c = self.config
        consumer = AIOKafkaConsumer(
            bootstrap_servers=c.bootstrap_servers,
            group_id=c.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=c.batch_max,
            fetch_max_wait_ms=c.fetch_wait_ms,
            session_timeout_ms=c.session_timeout_ms,
            heartbeat_interval_ms=max(50, c.session_timeout_ms // 10),
            rebalance_timeout_ms=c.rebalance_timeout_ms,
        )
        listener = _Rebalance(self._idle, self.assigned, c.drain_timeout_seconds)
        consumer.subscribe(list(self.projection.topics), listener=listener)
        producer = AIOKafkaProducer(bootstrap_servers=c.bootstrap_servers, acks="all")
        try:
            for client in (producer, consumer):
                await self._retrying("start", functools.partial(_kafka_start, client))
            self._log.info("consumer.started", topics=list(self.projection.topics))
            freeze_startup_objects()
            await self.pause.check()  # a paused consumer must not apply even its first batch
            watching = asyncio.create_task(self.pause.run(self._stopping), name="pause-watch")
            try:
                await self._consume(consumer, producer)
            finally:
                watching.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watching
        except _StoppingError:
            pass  # stopped while the broker was still out of reach: nothing was consumed
        finally:
            # Both, started or not: a client whose start failed still holds its connections.
            for client in (consumer, producer):
                with contextlib.suppress(KafkaError, OSError):
                    await client.stop()
            self._log.info("consumer.stopped", **_as_dict(self.stats))

    async def _consume(self, consumer: AIOKafkaConsumer, producer: AIOKafkaProducer) -> None:
        """Two batches at a time: while one is applied, the next is fetched and decoded."""
        c = self.config
        in_flight: asyncio.Task[None] | None = None
        try:
            while not self._stopping.is_set():
                records = await self._fetch(consumer, c.poll_ms, c.batch_max)
                if in_flight is not None and in_flight.done():
                    finished, in_flight = in_flight, None
                    finished.result()  # the batch's failure, if it had one
                if not records:
                    continue
                prepared = self._decode(_messages(records))
                if in_flight is not None:
                    running, in_flight = in_flight, None
                    await running
                    # What arrived meanwhile joins this batch instead of waiting a whole turn.
                    room = c.batch_max - len(prepared.messages)
                    more = await self._fetch(consumer, 0, room) if room else {}
                    if more:
                        prepared.extend(self._decode(_messages(more)))
                    # A rebalance meanwhile may have taken partitions: their next owner has them.
                    prepared = prepared.only(consumer.assignment())
                    if not prepared.messages:
                        continue
                self._idle.clear()
                in_flight = asyncio.create_task(self._handle(consumer, producer, prepared))
            if in_flight is not None:
                await in_flight  # stopping: finish and commit the batch in flight
        except _StoppingError:
            pass
        finally:
            if in_flight is not None and not in_flight.done():
                in_flight.cancel()
                with contextlib.suppress(asyncio.CancelledError, _StoppingError):
                    await in_flight

    async def _fetch(
        self, consumer: AIOKafkaConsumer, timeout_ms: int, max_records: int
    ) -> dict[TopicPartition, list[Any]]:
        """The next records, or none while paused. A paused consumer still polls, with every
        partition paused, so it keeps its place in the group; a record that slips through (from
        a partition assigned during the poll) is put back by seeking to it."""
        if self.pause.paused:
            consumer.pause(*consumer.assignment())
        elif consumer.paused():
            consumer.resume(*consumer.paused())
        records: dict[TopicPartition, list[Any]] = await consumer.getmany(
            timeout_ms=timeout_ms, max_records=max_records
        )
        if self.pause.paused and records:
            for tp, batch in records.items():
                consumer.seek(tp, batch[0].offset)
            return {}
        return records

    async def _handle(
        self, consumer: AIOKafkaConsumer, producer: AIOKafkaProducer, prepared: _Prepared[T]
    ) -> None:
        try:
            batch = prepared.messages
            outcome = await self._retrying("database", lambda: self._apply_prepared(prepared))
            if outcome.dead:
                await self._retrying(
                    "dead_letter_send", lambda: self._send_dead(producer, outcome.dead)
                )
            await self._retrying("offset_commit", lambda: self._commit_offsets(consumer, batch))
        finally:
            self._idle.set()

        self._budget.record(len(batch), len(outcome.dead))
        s = self.stats
        s.batches += 1
        s.messages += len(batch)
        s.applied += outcome.applied
        s.stale += outcome.stale
        s.duplicates += outcome.duplicates
        s.ignored += outcome.ignored
        s.dead_lettered += len(outcome.dead)
        s.tally.update(outcome.tally)
        self._log.debug(
            "consumer.batch",
            messages=len(batch),
            applied=outcome.applied,
            duplicates=outcome.duplicates,
            dead_lettered=len(outcome.dead),
        )

    async def apply_batch(self, batch: Sequence[ConsumedMessage]) -> BatchOutcome:
        """Decode and apply `batch` in one database transaction (retried while the database is
        down). Everything but Kafka: the run loop sends dead letters and commits offsets after.
        """
        prepared = self._decode(list(batch))
        return await self._retrying("database", lambda: self._apply_prepared(prepared))

    def _decode(self, batch: list[ConsumedMessage]) -> _Prepared[T]:
        prepared: _Prepared[T] = _Prepared(batch)
        for message in batch:
            try:
                item = self.projection.decode(message)
            except Exception as exc:  # noqa: BLE001 - decoding does no I/O: not invalid is a bug
                bug = verdict(exc) != "invalid"
                if bug:
                    self._log_bug(message, exc)
                letter = DeadLetter(message, exc, message.header("ce_id"), bug=bug)
                prepared.undecodable.append(letter)
                continue
            if item is None:
                prepared.ignored.append(message)
            else:
                prepared.decoded.append((message, item))
        return prepared

    async def _apply_prepared(self, prepared: _Prepared[T]) -> BatchOutcome:
        # No savepoint in the common case: it would cost two round trips per batch for the rare
        # batch that holds a poison message, which is rolled back and applied again one by one.
        decoded, undecodable = prepared.decoded, prepared.undecodable
        total = len(prepared.messages)
        self._budget.check(total, len(undecodable))
        try:
            async with transaction(self._engine) as conn:
                done = await self._claim_and_apply(conn, decoded)
                letters = list(undecodable)
                await self._record_rest(conn, prepared, letters, done.duplicates)
        except Exception as exc:
            if verdict(exc) == "retry":
                raise
            self._log.warning("consumer.batch_isolating", error=str(exc)[:500])
            async with transaction(self._engine) as conn:
                done, dead = await self._apply_one_by_one(conn, decoded)
                letters = [*undecodable, *dead]
                # Before the commit: a batch that would pass the limit is applied nowhere.
                self._budget.check(total, len(letters))
                await self._record_rest(conn, prepared, letters, done.duplicates)
        for letter in letters:
            m = letter.message
            self._log.warning(
                "consumer.dead_letter",
                topic=m.topic,
                partition=m.partition,
                offset=m.offset,
                event_id=letter.event_id,
                error_type=letter.error_type,
                error=letter.error_text[:500],
            )
        return BatchOutcome(
            applied=done.applied,
            duplicates=len(done.duplicates),
            ignored=len(prepared.ignored),
            dead=letters,
            tally=done.tally,
            stale=done.stale,
        )

    async def _record_rest(
        self,
        conn: AsyncConnection,
        prepared: _Prepared[T],
        letters: list[DeadLetter],
        duplicates: list[Outcome],
    ) -> None:
        """The dead letters, and the outcomes no dedupe record holds, in the batch's
        transaction (an applied or stale event's outcome is its dedupe record)."""
        await record_dead_letters(conn, self.name, letters)
        rest = [Outcome(m, m.header("ce_id"), "ignored") for m in prepared.ignored]
        rest += [
            Outcome(
                d.message,
                d.event_id,
                "dead_lettered",
                {"error_type": d.error_type, "error": d.error_text},
            )
            for d in letters
        ]
        await record_outcomes(conn, self.name, [*duplicates, *rest])

    async def _apply_one_by_one(
        self, conn: AsyncConnection, decoded: list[tuple[ConsumedMessage, Decoded[T]]]
    ) -> tuple[_Claimed, list[DeadLetter]]:
        total = _Claimed()
        dead: list[DeadLetter] = []
        for message, item in decoded:
            try:
                async with savepoint(conn):
                    done = await self._claim_and_apply(conn, [(message, item)])
            except Exception as exc:
                found = verdict(exc)
                if found == "retry":
                    raise
                if found == "bug":
                    self._log_bug(message, exc)
                dead.append(DeadLetter(message, exc, item.event_id, bug=found == "bug"))
            else:
                total.add(done)
        return total, dead

    async def _claim_and_apply(
        self, conn: AsyncConnection, items: Sequence[tuple[ConsumedMessage, Decoded[T]]]
    ) -> _Claimed:
        first: dict[str, tuple[ConsumedMessage, Decoded[T]]] = {}
        for message, item in items:
            first.setdefault(item.event_id, (message, item))
        ids = list(first)
        # What the batch itself makes stale is known before the claim, which records it so.
        foreseen: dict[str, dict[str, Any]] = {}
        if isinstance(self.projection, KnowsSuperseded):
            superseded = self.projection.superseded([first[e][1].value for e in ids])
            foreseen = {ids[n]: why for n, why in superseded.items()}
        fresh = await claim_events(conn, self.name, ids, [first[e][0] for e in ids], foreseen)
        new = [event_id for event_id in first if event_id in fresh]
        values = [first[e][1].value for e in new]
        result = await self.projection.apply(conn, values) if new else None
        stale = {new[n]: why for n, why in result.stale.items()} if result is not None else {}
        # What the apply found otherwise: a row that held a newer version already (or a newer
        # copy in the batch that was a duplicate, so the foreseen detail was not the row's).
        await correct_outcomes(
            conn,
            self.name,
            {
                e: stale.get(e)
                for e in (stale.keys() | foreseen.keys()) & fresh
                if stale.get(e) != foreseen.get(e)
            },
        )
        duplicates: list[Outcome] = []
        if len(new) < len(items):
            # The first copy of a fresh event id is the one applied; any other is a duplicate.
            unclaimed = set(new)
            for message, item in items:
                if item.event_id in unclaimed:
                    unclaimed.discard(item.event_id)
                else:
                    duplicates.append(Outcome(message, item.event_id, "duplicate"))
        tally = result.tally if result is not None else Counter()
        return _Claimed(len(new), len(stale), duplicates, tally)

    def _log_bug(self, message: ConsumedMessage, exc: Exception) -> None:
        # Not the message's fault: sluice's own code failed on it. Dead-lettered all the same
        # (redrive it once the code is fixed), but said loudly, with the traceback.
        self._log.error(
            "consumer.bug",
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            event_id=message.header("ce_id"),
            error_type=type(exc).__name__,
            exc_info=exc,
        )

    async def _send_dead(self, producer: AIOKafkaProducer, letters: list[DeadLetter]) -> None:
        async def send() -> None:
            pending = [
                await producer.send(
                    letter.dlq_topic,
                    value=letter.message.value,
                    key=letter.message.key,
                    headers=letter.dlq_headers(self.name),
                )
                for letter in letters
            ]
            await asyncio.gather(*pending)

        await _kafka("dead-letter send", send())

    async def _commit_offsets(
        self, consumer: AIOKafkaConsumer, batch: list[ConsumedMessage]
    ) -> None:
        offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        for m in batch:
            offsets[TopicPartition(m.topic, m.partition)] = OffsetAndMetadata(m.offset + 1, "")
        try:
            await consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            # The partitions went to another member during a rebalance. It will redeliver from
            # the last committed offsets; the dedupe records make that harmless.
            self._log.warning("consumer.commit_lost_to_rebalance", error=str(exc))
        except (KafkaError, OSError) as exc:
            raise KafkaUnavailableError(f"offset commit failed: {exc}") from exc

    async def _retrying(self, step: str, attempt: Callable[[], Awaitable[R]]) -> R:
        backoff = Backoff(_RETRY_FIRST_SECONDS, self.config.retry_max_seconds)
        while True:
            try:
                return await attempt()
            except TransientError as exc:
                self.stats.failures += 1
                if self._stopping.is_set():
                    raise _StoppingError from exc
                pause = backoff.next_delay()
                self._log.warning("consumer.retrying", step=step, error=str(exc), pause=pause)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), pause)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    def __init__(self, idle: asyncio.Event, assigned: asyncio.Event, drain_seconds: float) -> None:
        self._idle = idle
        self._assigned = assigned
        self._drain_seconds = drain_seconds

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        # Let the batch in flight finish and commit its offsets, but never hold the group up
        # for longer than the bound; past it, the next owner redelivers and dedupe absorbs it.
        try:
            await asyncio.wait_for(self._idle.wait(), self._drain_seconds)
        except TimeoutError:
            log.warning("consumer.revoke_without_drain", partitions=len(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        names = sorted(f"{tp.topic}/{tp.partition}" for tp in assigned)
        log.info("consumer.assigned", partitions=names)
        self._assigned.set()


def _as_dict(stats: ConsumerStats) -> dict[str, int]:
    return {name: getattr(stats, name) for name in ConsumerStats.__slots__ if name != "tally"}
