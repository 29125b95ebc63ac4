"""Dead letters: the database record, the `.dlq` message, and the limit on how many may pile up."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import text

from consumers.dedupe import nul_free
from consumers.errors import DeadLetterLimitError
from schemas.topics import dlq_topic
from sluice.jsontext import json_text

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sqlalchemy.ext.asyncio import AsyncConnection

    from consumers.message import ConsumedMessage

# Longest error text kept in a header or row; a stack of validation errors can be huge.
_MAX_ERROR_CHARS = 2000


@dataclass(frozen=True, slots=True)
class DeadLetter:
    message: ConsumedMessage
    error: BaseException
    event_id: str | None = None
    bug: bool = False  # sluice's own code failed on the message, not the message itself

    @property
    def error_type(self) -> str:
        """The error's class; `bug:<class>` when the failure was a bug (consumers/runtime.py)."""
        name = type(self.error).__name__
        return f"bug:{name}" if self.bug else name

    @property
    def error_text(self) -> str:
        return str(self.error)[:_MAX_ERROR_CHARS]

    @property
    def dlq_topic(self) -> str:
        return dlq_topic(self.message.topic)

    def dlq_headers(self, consumer: str) -> list[tuple[str, bytes]]:
        """The original headers plus where the message came from and why it failed."""
        m = self.message
        extra = {
            "dlq_consumer": consumer,
            "dlq_error_type": self.error_type,
            "dlq_error": self.error_text,
            "dlq_topic": m.topic,
            "dlq_partition": str(m.partition),
            "dlq_offset": str(m.offset),
        }
        return [*m.headers, *((k, v.encode()) for k, v in extra.items())]


_RECORD = text(
    """
    INSERT INTO dead_letters
        (consumer, topic, partition, "offset", key, value, headers, event_id, error_type, error)
    SELECT :consumer, t, p, o, k, v, CAST(h AS jsonb), e, et, er
    FROM unnest(
        CAST(:topics AS text[]), CAST(:partitions AS int[]), CAST(:offsets AS bigint[]),
        CAST(:keys AS bytea[]), CAST(:values AS bytea[]), CAST(:headers AS text[]),
        CAST(:event_ids AS text[]), CAST(:error_types AS text[]), CAST(:errors AS text[])
    ) AS d(t, p, o, k, v, h, e, et, er)
    ON CONFLICT (consumer, topic, partition, "offset") DO NOTHING
    """
)


async def record_dead_letters(
    conn: AsyncConnection, consumer: str, letters: Sequence[DeadLetter]
) -> None:
    """One row per dead letter, in the batch's transaction; a redelivered one is stored once."""
    if not letters:
        return
    await conn.execute(
        _RECORD,
        {
            "consumer": consumer,
            "topics": [d.message.topic for d in letters],
            "partitions": [d.message.partition for d in letters],
            "offsets": [d.message.offset for d in letters],
            "keys": [d.message.key for d in letters],
            "values": [d.message.value for d in letters],
            # jsonb refuses \u0000, and a header may hold anything
            "headers": [
                json_text({k: nul_free(v) for k, v in d.message.text_headers().items()})
                for d in letters
            ],
            "event_ids": [d.event_id for d in letters],
            "error_types": [d.error_type for d in letters],
            "errors": [nul_free(d.error_text) for d in letters],
        },
    )


class DeadLetterBudget:
    """Trips when more than `max_ratio` x `window` of the last `window` messages were dead-lettered.

    Checked before a batch commits, so the batch that would pass the limit is not applied: the
    consumer stops with those messages still unconsumed instead of draining them into the DLQ.
    """

    def __init__(self, max_ratio: float, window: int) -> None:
        self._limit = max_ratio * window
        self._window = window
        self._outcomes: deque[bool] = deque(maxlen=window)

    def check(self, total: int, dead: int) -> None:
        if dead == 0:
            return
        # Dead letters still in the window after this batch's outcomes push older ones out.
        kept = list(self._outcomes)[max(0, len(self._outcomes) + total - self._window) :]
        in_window = sum(kept) + min(dead, self._window)
        if in_window > self._limit:
            raise DeadLetterLimitError(
                f"{in_window} of the last {min(self._window, len(kept) + total)} messages "
                f"were dead-lettered (limit {self._limit:g} per {self._window})"
            )

    def record(self, total: int, dead: int) -> None:
        self._outcomes.extend([True] * dead + [False] * (total - dead))
