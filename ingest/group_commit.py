"""Group commit: concurrent deliveries share one transaction, and one WAL flush.

A plain transaction per request spends most of its time waiting for its own commit to reach disk.
Here each request puts its event on a queue and waits; a few writer tasks each take whatever is
queued (up to `batch_max`), record it in one transaction, and only after that commit resolve each
request's future. Every 2xx therefore still follows its own rows' durable commit.

If a batch fails for a reason that is not an outage (say one event's data is refused by the
database), its events are retried one by one so a bad event cannot fail its neighbours.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

import structlog
from sqlalchemy.exc import DataError

from ingest.record import NewEvent, Recorded, RejectedEventError, record_events
from sluice.db import DatabaseUnavailableError, transaction
from sluice.tracing import TRACEPARENT, current_traceparent

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sqlalchemy.ext.asyncio import AsyncEngine

log = structlog.get_logger(__name__)

_Pending = tuple[NewEvent, "asyncio.Future[Recorded]"]


class GroupCommitWriter:
    def __init__(self, engine: AsyncEngine, *, writers: int = 4, batch_max: int = 256) -> None:
        self._engine = engine
        self._writers = writers
        self._batch_max = batch_max
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._run(), name=f"group-commit-{i}") for i in range(self._writers)
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
        traceparent = current_traceparent()  # set only while tracing is on (sluice.tracing)
        if traceparent is not None:
            event.message.headers[TRACEPARENT] = traceparent
        future: asyncio.Future[Recorded] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((event, future))
        # Shielded: a client that hangs up must not cancel the write its neighbours share.
        return await asyncio.shield(future)

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._batch_max and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._write(batch)
            finally:
                for _ in batch:
                    self._queue.task_done()

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
        async with transaction(self._engine) as conn:
            return await record_events(conn, events)


def _as_rejection(exc: Exception) -> Exception:
    if isinstance(exc, DataError):
        reason = str(exc.orig).splitlines()[0] if exc.orig else "invalid data"
        return RejectedEventError(f"the database refused this event: {reason}")
    return exc


def _fail(batch: Sequence[_Pending], exc: BaseException) -> None:
    for _, future in batch:
        if not future.done():
            future.set_exception(exc)
