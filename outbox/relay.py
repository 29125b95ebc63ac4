"""The outbox relay: publishes committed outbox rows to Kafka, then deletes them.

One loop per process. Each turn, in short transactions and never across a Kafka round trip:

1. wait for the previous batch's acknowledgements,
2. read the oldest rows of the buckets this relay leases, skipping rows in flight (while a
   backlog drains, this read was started last turn, as soon as the previous batch was sent),
3. hand the rows to the producer,
4. delete the acknowledged rows in the background, checking the lease token is still ours.

A row is deleted only after the broker acknowledged it (acks=all), so a relay killed at any point
loses nothing: its leases expire and another relay publishes the rows again (at least once; the
`ce_id` header lets consumers drop the repeat). Any failure stops sending until the batch in
flight is settled, so a key's later rows never overtake its earlier ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import structlog

from outbox.health import RelayState, StateTracker
from outbox.leases import BucketLeases
from outbox.metrics import RelayMetrics
from outbox.producer import (
    Delivery,
    KafkaUnavailableError,
    OutboxProducer,
    PublishRefusedError,
    TopicMissingError,
)
from outbox.rows import backlog, delete_rows, read_rows
from sluice.db import DatabaseUnavailableError, create_engine
from sluice.gc_policy import freeze_startup_objects
from sluice.listen import CommitListener
from sluice.pause import RELAY, PauseWatch
from sluice.resilience import Backoff

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from sqlalchemy.ext.asyncio import AsyncEngine

    from outbox.producer import OutboxRecord
    from sluice.settings import Settings

log = structlog.get_logger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RelayConfig:
    database_url: str
    bootstrap_servers: str
    idempotence: bool = True
    request_timeout_ms: int = 5000
    lease_seconds: float = 30.0
    batch_size: int = 2000
    poll_seconds: float = 10.0
    pause_check_seconds: float = 30.0  # the pause flag's fallback poll (sluice/pause.py)
    stats_log_seconds: float = 60.0
    db_timeout_seconds: float = 10.0
    max_backoff_seconds: float = 10.0

    @classmethod
    def from_settings(cls, settings: Settings) -> RelayConfig:
        return cls(
            database_url=settings.require_database_url(),
            bootstrap_servers=settings.require_kafka(),
            idempotence=settings.kafka_idempotence,
            request_timeout_ms=settings.kafka_request_timeout_ms,
            lease_seconds=settings.relay_lease_seconds,
            batch_size=settings.relay_batch_size,
            poll_seconds=settings.relay_poll_seconds,
        )


def relay_owner_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def quiet_kafka_client_logs() -> None:
    """aiokafka logs every failed connection attempt; the relay reports state changes itself."""
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)


class Relay:
    def __init__(
        self,
        config: RelayConfig,
        *,
        metrics: RelayMetrics | None = None,
        owner: str | None = None,
    ) -> None:
        self.config = config
        self.owner = owner or relay_owner_id()
        self.metrics = metrics or RelayMetrics()
        self._engine: AsyncEngine = create_engine(
            config.database_url, pool_size=2, application_name="sluice-relay"
        )
        self._producer = OutboxProducer(
            config.bootstrap_servers,
            idempotence=config.idempotence,
            request_timeout_ms=config.request_timeout_ms,
        )
        self.leases = BucketLeases(self._engine, self.owner, config.lease_seconds)
        self._listener = CommitListener(config.database_url)
        self._health = StateTracker(owner=self.owner)
        self._log = log.bind(owner=self.owner)
        self._pending: Delivery | None = None
        self._acked: list[OutboxRecord] = []  # published, not yet deleted
        self._prefetch: asyncio.Task[list[OutboxRecord]] | None = None
        self._deleting: asyncio.Task[int] | None = None
        self._deleting_records: list[OutboxRecord] = []
        self._next_maintenance = 0.0
        self._published_since_log = 0
        self._next_stats_log = 0.0
        self._stopping = asyncio.Event()
        self.pause = PauseWatch(
            self._engine,
            RELAY,
            every_seconds=config.pause_check_seconds,
            gauge=self.metrics.paused,
        )

    @property
    def state(self) -> RelayState:
        return self._health.state

    @property
    def state_history(self) -> list[RelayState]:
        return list(self._health.history)

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        listener = asyncio.create_task(self._listener.run(), name="relay-listen")
        watching = asyncio.create_task(self.pause.run(self._stopping), name="pause-watch")
        backoff = Backoff(0.1, self.config.max_backoff_seconds)
        self._log.info("relay.start", lease_seconds=self.config.lease_seconds)
        freeze_startup_objects()
        await self.pause.check()  # a paused relay must not publish even its first batch
        try:
            while not self._stopping.is_set():
                try:
                    idle = await self._turn()
                except (DatabaseUnavailableError, KafkaUnavailableError) as exc:
                    kafka = isinstance(exc, KafkaUnavailableError)
                    self._health.set("kafka_down" if kafka else "database_down", str(exc))
                    await self._settle(reset_kafka=kafka)
                    await self._sleep(backoff.next_delay())
                except (TopicMissingError, PublishRefusedError) as exc:
                    missing = isinstance(exc, TopicMissingError)
                    self._health.set("topic_missing" if missing else "publish_refused", str(exc))
                    await self._settle(reset_kafka=not missing)
                    await self._sleep(backoff.next_delay())
                else:
                    self._health.set("healthy")
                    backoff.reset()
                    if idle:
                        await self._idle()
        finally:
            for task in (listener, watching):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await self._shutdown()

    async def _turn(self) -> bool:
        """One step of the pipeline; True when there is nothing to do until woken."""
        if not self._producer.started:
            await self._producer.start()
        if time.monotonic() >= self._next_maintenance:
            await self._maintain()
        if self.leases.remaining() <= self._producer.delivery_timeout:
            # Too little lease left to finish a send before it could expire: renew first.
            await self._settle(reset_kafka=False)
            self._next_maintenance = 0.0
            return False

        if self.pause.paused:
            return await self._hold()
        if self._prefetch is not None:
            prefetch, self._prefetch = self._prefetch, None
            rows = await prefetch
            await self._collect()
        else:
            # Read only once the batch in flight is acknowledged: rows committed meanwhile then
            # travel in this batch instead of waiting for the next acknowledgement.
            await self._collect()
            self._listener.wake.clear()
            rows = await self._read(self._unfinished_ids())
        if rows:
            await self._producer.check_topics({r.topic for r in rows})
            self._pending = await self._producer.send(rows)
            if len(rows) >= self.config.batch_size:
                # A backlog: read the next batch while this one travels.
                self._listener.wake.clear()
                self._prefetch = asyncio.create_task(self._read(self._unfinished_ids()))
        await self._start_delete()
        if not rows and self._pending is None:
            await self._finish_delete()
            return True
        return False

    async def _hold(self) -> bool:
        """Paused: finish the batch in flight and its delete, publish nothing new (rows read
        ahead stay in the outbox for after the resume)."""
        if self._prefetch is not None:
            prefetch, self._prefetch = self._prefetch, None
            prefetch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await prefetch
        await self._collect()
        await self._start_delete()
        await self._finish_delete()
        return True

    def _unfinished_ids(self) -> set[int]:
        """Rows in flight, or acked but not yet deleted: a read must skip them. Taken when the
        read is decided, not when it runs, as the sets change meanwhile."""
        ids = {r.id for r in self._acked}
        ids.update(r.id for r in self._deleting_records)
        if self._pending is not None:
            ids.update(r.id for r in self._pending.records)
        return ids

    async def _read(self, skip: set[int]) -> list[OutboxRecord]:
        return await self._db(
            read_rows(self._engine, list(self.leases.held), limit=self.config.batch_size, skip=skip)
        )

    async def _collect(self) -> None:
        """Wait for the batch in flight; keep what was acked; raise the first failure."""
        if self._pending is None:
            return
        pending, self._pending = self._pending, None
        result = await pending.result(self._producer.delivery_timeout)
        for record, acked_at in zip(result.acked, result.acked_at, strict=True):
            self.metrics.publish_lag.observe(acked_at - record.created_at)
        self._acked.extend(result.acked)
        if result.error is not None:
            raise result.error

    async def _start_delete(self) -> None:
        """Delete the acked rows in the background; at most one delete runs at a time."""
        if not self._acked:
            return
        await self._finish_delete()
        records, self._acked = self._acked, []
        self._deleting_records = records
        ids = [r.id for r in records]
        self._deleting = asyncio.create_task(
            self._db(delete_rows(self._engine, ids, self.leases.tokens))
        )

    async def _finish_delete(self) -> None:
        if self._deleting is None:
            return
        task, records = self._deleting, self._deleting_records
        try:
            deleted = await task
        except DatabaseUnavailableError:
            self._acked = records + self._acked  # published: delete them when we can
            raise
        finally:
            # Only now: until the delete committed, a read could still see these rows.
            self._deleting, self._deleting_records = None, []
        if deleted < len(records):
            # Our lease on some bucket ended: its new owner publishes those rows again.
            self._log.warning("relay.delete_after_lease", acked=len(records), deleted=deleted)
        self.metrics.published.inc(len(records))
        self._published_since_log += len(records)

    async def _drop_prefetch(self) -> None:
        if self._prefetch is None:
            return
        prefetch, self._prefetch = self._prefetch, None
        with contextlib.suppress(DatabaseUnavailableError):
            await prefetch

    async def _quiesce(self) -> None:
        """Nothing read ahead, nothing in flight, every acked row deleted (or raise)."""
        await self._drop_prefetch()
        await self._collect()
        await self._start_delete()
        await self._finish_delete()

    async def _settle(self, *, reset_kafka: bool) -> None:
        """After a failure: let the batch in flight finish, keep its acks, maybe drop the client.

        Rows read ahead are dropped and nothing new is sent until this returns, so a failed row
        is always re-sent before any later row of its key.
        """
        await self._drop_prefetch()
        with contextlib.suppress(KafkaUnavailableError, PublishRefusedError):
            await self._collect()
        if reset_kafka:
            await self._producer.stop()
        with contextlib.suppress(DatabaseUnavailableError):
            await self._start_delete()
            await self._finish_delete()

    async def _maintain(self) -> None:
        # Releasing a bucket while its rows are in flight would let its next owner overtake them.
        await self._quiesce()
        change = await self._db(self.leases.maintain())
        if change.acquired or change.released or change.lost:
            self._log.info(
                "relay.buckets",
                held=change.held,
                acquired=len(change.acquired),
                released=len(change.released),
                lost=len(change.lost),
                live_relays=change.live_relays,
            )
        # Renew well before the remaining lease gets too short to start a send.
        lease = self.config.lease_seconds
        interval = min(lease / 3, (lease - self._producer.delivery_timeout) / 2)
        # Still short of a fair share: others release surplus at their next renewal; look soon.
        if change.wants_more:
            interval = min(interval, 1.0)
        self._next_maintenance = time.monotonic() + interval
        self.metrics.buckets_held.set(change.held)
        await self._refresh_stats()

    async def _refresh_stats(self) -> None:
        stats = await self._db(backlog(self._engine))
        self.metrics.backlog_rows.set(stats.rows)
        self.metrics.oldest_age_seconds.set(stats.oldest_age_seconds)
        now = time.monotonic()
        if now < self._next_stats_log:
            return
        elapsed = self.config.stats_log_seconds if self._next_stats_log else 0.0
        if self._published_since_log or stats.rows:
            self._log.info(
                "relay.progress",
                published=self._published_since_log,
                per_second=round(self._published_since_log / elapsed, 1) if elapsed else None,
                backlog=stats.rows,
                oldest_age_s=round(stats.oldest_age_seconds, 1),
                buckets=len(self.leases.held),
            )
        self._published_since_log = 0
        self._next_stats_log = now + self.config.stats_log_seconds

    async def _idle(self) -> None:
        timeout = min(self.config.poll_seconds, max(0.0, self._next_maintenance - time.monotonic()))
        wake = asyncio.create_task(self._listener.wake.wait())
        stop = asyncio.create_task(self._stopping.wait())
        pause = asyncio.create_task(self.pause.changed.wait())  # a resume ends the wait at once
        try:
            await asyncio.wait(
                {wake, stop, pause}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for task in (wake, stop, pause):
                task.cancel()
            self.pause.changed.clear()

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _db(self, call: Awaitable[T]) -> T:
        try:
            async with asyncio.timeout(self.config.db_timeout_seconds):
                return await call
        except TimeoutError as exc:
            raise DatabaseUnavailableError("PostgreSQL did not answer in time") from exc

    async def _shutdown(self) -> None:
        with contextlib.suppress(Exception):
            await self._settle(reset_kafka=True)
        try:
            async with asyncio.timeout(self.config.db_timeout_seconds):
                await self.leases.release_all()
        except (DatabaseUnavailableError, TimeoutError):
            self._log.warning("relay.release_failed")  # the leases simply expire
        await self._engine.dispose()
        self._log.info("relay.stop")


async def serve_relay(config: RelayConfig, *, metrics_port: int | None = None) -> None:
    """Run one relay until SIGTERM or SIGINT, then hand its buckets back."""
    quiet_kafka_client_logs()
    relay = Relay(config)
    if metrics_port is not None:
        relay.metrics.serve(metrics_port)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, relay.stop)
    await relay.run()
