"""Webhook answers (accepted, duplicate, or the reason of a refusal), counted in PostgreSQL per
source, reason and minute (`webhook_answers`), for the console's overview: Prometheus holds the
same counts per process, but the console reads the database, and a day of traffic is then at
most 1,440 rows per reason whatever the volume.

Nothing of a refused request is stored, and no answer costs a database round trip: counts are
added in memory and written every few seconds in one statement, so a flood of bad signatures
costs one row per reason and minute. When the database is unreachable (deliveries are refused
with 503 then) the counts wait for the next write; at most `MAX_MINUTES` minutes of them are
kept, the oldest given up first. A process killed outright loses its last few seconds of counts:
these are figures to look at, not records (every accepted event is its own row). Counts older
than `KEEP_DAYS` days are deleted as new ones are written.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from typing import TYPE_CHECKING

import structlog
from sqlalchemy import text

from sluice.db import transaction
from sluice.errors import TransientError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from sqlalchemy.ext.asyncio import AsyncEngine

log = structlog.get_logger(__name__)

FLUSH_SECONDS = 5.0
MAX_MINUTES = 60
KEEP_DAYS = 2  # the overview shows the last day

_ADD = text(
    """
    INSERT INTO webhook_answers (source, reason, minute, count)
    SELECT s, r, to_timestamp(m), n
    FROM unnest(CAST(:sources AS text[]), CAST(:reasons AS text[]), CAST(:minutes AS bigint[]),
                CAST(:counts AS bigint[])) AS t(s, r, m, n)
    ON CONFLICT (minute, source, reason)
    DO UPDATE SET count = webhook_answers.count + excluded.count
    """
)
# The primary key leads with the minute: finding nothing to delete is one index probe.
_FORGET = text("DELETE FROM webhook_answers WHERE minute < now() - make_interval(days => :days)")


class AnswerTally:
    def __init__(self) -> None:
        self._counts: Counter[tuple[str, str, int]] = Counter()

    def add(self, source: str, reason: str) -> None:
        self._counts[source, reason, int(time.time()) // 60 * 60] += 1

    async def flush(self, engine: AsyncEngine) -> None:
        if not self._counts:
            return
        counts, self._counts = self._counts, Counter()
        keys = sorted(counts)
        params = {
            "sources": [k[0] for k in keys],
            "reasons": [k[1] for k in keys],
            "minutes": [k[2] for k in keys],
            "counts": [counts[k] for k in keys],
        }
        try:
            async with transaction(engine) as conn:
                await conn.execute(_ADD, params)
                await conn.execute(_FORGET, {"days": KEEP_DAYS})
        except TransientError:
            self._counts.update(counts)  # written with the next flush
            newest = max(k[2] for k in self._counts)
            for key in [k for k in self._counts if k[2] <= newest - MAX_MINUTES * 60]:
                del self._counts[key]
            raise

    async def run(self, engine: AsyncEngine) -> None:
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            try:
                await self.flush(engine)
            except TransientError as exc:
                log.warning("ingest.answer_counts_not_written", error=str(exc))

    @contextlib.asynccontextmanager
    async def flushing(self, engine: AsyncEngine) -> AsyncIterator[None]:
        task = asyncio.create_task(self.run(engine), name="answer-tally")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            with contextlib.suppress(TransientError):
                await self.flush(engine)  # what the last seconds answered
