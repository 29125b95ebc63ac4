"""Event ids: UUIDv7 (RFC 9562), whose first 48 bits are the milliseconds of their making.

Every table keyed by an event id (each week's events, every consumer's dedupe records, the
journeys) then receives new keys at the end of its index, where the pages are already in memory,
instead of at random pages all through it: a store of tens of millions of events costs each
write about what an empty one does. The ids still carry 74 random bits, so they are as unique
and as unguessable in practice as version 4 ids.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from uuid_utils.compat import uuid7

if TYPE_CHECKING:
    import uuid


def new_event_id() -> uuid.UUID:
    """A fresh event id, later than any this process made before (monotonic within a
    millisecond, as RFC 9562 allows)."""
    return uuid7()


# The latest time an id is taken to name: anyone may type an id, and its 48 bits of
# milliseconds reach the year 10889, past what a datetime (and a day either side) can hold.
_LATEST = datetime(9000, 1, 1, tzinfo=UTC)


def made_at(event_id: uuid.UUID) -> datetime | None:
    """When a v7 id was made (to the millisecond), or None for an id of another version or one
    whose time is past any that could be real."""
    if event_id.version != 7:  # RFC 9562: the time-ordered version
        return None
    milliseconds = event_id.int >> 80
    if milliseconds >= _LATEST.timestamp() * 1000:
        return None
    return datetime.fromtimestamp(milliseconds / 1000, UTC)
