"""Exactly-once effect: a consumer records each event id it applies, in the same transaction."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import text

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sqlalchemy.ext.asyncio import AsyncConnection

_CLAIM = text(
    """
    INSERT INTO consumer_dedupe (consumer, event_id)
    SELECT :consumer, e FROM unnest(CAST(:event_ids AS text[])) AS e
    ON CONFLICT DO NOTHING
    RETURNING event_id
    """
)


async def claim_events(conn: AsyncConnection, consumer: str, event_ids: Sequence[str]) -> set[str]:
    """Record `event_ids` as applied by `consumer`; returns those not recorded before.

    If the caller's transaction rolls back, so do the records: an event counts as applied only
    when its effect committed.
    """
    if not event_ids:
        return set()
    result = await conn.execute(_CLAIM, {"consumer": consumer, "event_ids": list(event_ids)})
    return {row[0] for row in result}
