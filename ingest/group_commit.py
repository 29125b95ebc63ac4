"""Group commit: concurrent deliveries share one transaction, and one WAL flush.

A plain transaction per request spends most of its time waiting for its own commit to reach disk.
Here each request puts its event on a queue and waits; a few writer tasks each take whatever is
queued (up to `batch_max`), record it in one transaction, and only after that commit resolve each
request's future. Every 2xx therefore still follows its own rows' durable commit.

Each writer owns one autocommit psycopg connection and records a batch with one statement, its
own transaction: one round trip per batch, no pool checkout and none of SQLAlchemy's
per-statement work. Under load the event loop is busy with requests, and every round trip a
batch waits for costs a turn of that loop, so round trips are what bound a batch's latency.

If a batch fails for a reason that is not an outage (say one event's data is refused by the
database), its events are retried one by one so a bad event cannot fail its neighbours.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

import psycopg
import structlog

from ingest.record import NewEvent, Recorded, RejectedEventError, record_events_on
from sluice.db import DatabaseUnavailableError, is_transient, libpq_url, unavailable
from sluice.tracing import stamp_traceparent

if TYPE_CHECKING:
    from collections.abc import Sequence

log = structlog.get_logger(__name__)

_Pending = tuple[NewEvent, "asyncio.Future[Recorded]"]
CONNECT_TIMEOUT_SECONDS = 3


class GroupCommitWriter:
    def __init__(self, database_url: str, *, writers: int = 4, batch_max: int = 256) -> None:
        self._url = libpq_url(database_url)
        self._writers = writers
        self._batch_max = batch_max
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(
                _Writer(self._url, self._queue, self._batch_max).run(), name=f"group-commit-{i}"
            )
            for i in range(self._writers)
        ]

    async def stop(self) -> None:
        # Let queued events finish: each of them has a caller waiting for its answer.
        await self._queue.join()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def record(self, event: NewEvent) -> Recorded:
        if not self._tasks:
            raise RuntimeError("GroupCommitWriter is not started")
        stamp_traceparent(event.message.headers)  # only while tracing is on (sluice.tracing)
        future: asyncio.Future[Recorded] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((event, future))
        # A caller that gives up (a timeout) cancels only its own future: the event is queued
        # already, the batch it joins is written all the same, and results skip done futures.
        return await future


class _Writer:
    """One writer task and its connection, opened on first use and after any failure."""

    def __init__(self, url: str, queue: asyncio.Queue[_Pending], batch_max: int) -> None:
        self._url = url
        self._queue = queue
        self._batch_max = batch_max
        self._conn: psycopg.AsyncConnection[Any] | None = None

    async def run(self) -> None:
        queue, batch_max = self._queue, self._batch_max
        try:
            while True:
                batch = [await queue.get()]
                while len(batch) < batch_max and not queue.empty():
                    batch.append(queue.get_nowait())
                try:
                    await self._write(batch)
                finally:
                    for _ in batch:
                        queue.task_done()
        finally:
            await self._close()

    async def _write(self, batch: Sequence[_Pending]) -> None:
        try:
            results = await self._record([event for event, _ in batch])
        except DatabaseUnavailableError as exc:
            _fail(batch, exc)
            return
        except Exception as exc:  # noqa: BLE001 - isolated below, never swallowed
            if len(batch) == 1:
                _fail(batch, _as_rejection(exc))
                return
            log.warning("group_commit.batch_failed_isolating", size=len(batch), error=str(exc))
            for pending in batch:
                await self._write([pending])
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)

    async def _record(self, events: Sequence[NewEvent]) -> list[Recorded]:
        # A connection kept from an earlier batch may have died while idle (a server restart,
        # a network cut): that costs one fresh connection, not the batch. A failure on a fresh
        # connection is an outage. Repeating a batch whose commit was lost is safe: its events
        # dedupe on (source, provider_event_id) and find their own ids, so none counts as a
        # duplicate or leaves a repeat.
        reused = self._usable()
        while True:
            try:
                conn = await self._connection()
                return await record_events_on(conn, events)
            except Exception as exc:
                if not is_transient(exc):
                    raise
                await self._close()
                if reused:
                    reused = False
                    continue
                raise unavailable(exc) from exc

    def _usable(self) -> bool:
        return self._conn is not None and not self._conn.closed and not self._conn.broken

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is not None and self._usable():
            return self._conn
        await self._close()
        self._conn = await psycopg.AsyncConnection.connect(
            self._url,
            autocommit=True,
            connect_timeout=CONNECT_TIMEOUT_SECONDS,
            application_name="sluice-ingest",
        )
        return self._conn

    async def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error, OSError):
                await conn.close()


def _as_rejection(exc: Exception) -> Exception:
    if isinstance(exc, psycopg.DataError):
        reason = str(exc).splitlines()[0]
        return RejectedEventError(f"the database refused this event: {reason}")
    return exc


def _fail(batch: Sequence[_Pending], exc: BaseException) -> None:
    for _, future in batch:
        if not future.done():
            future.set_exception(exc)
