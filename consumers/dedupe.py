"""Exactly-once effect: a consumer records each event id it applies, in the same transaction."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sluice.db import driver_connection

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sqlalchemy.ext.asyncio import AsyncConnection

# Run on the driver connection (psycopg placeholders): see claim_events.
_CLAIM = """
    INSERT INTO consumer_dedupe (consumer, event_id)
    SELECT %(consumer)s, e FROM unnest(CAST(%(event_ids)s AS text[])) AS e
    ON CONFLICT DO NOTHING
    RETURNING event_id
    """


async def claim_events(conn: AsyncConnection, consumer: str, event_ids: Sequence[str]) -> set[str]:
    """Record `event_ids` as applied by `consumer`; returns those not recorded before.

    If the caller's transaction rolls back, so do the records: an event counts as applied only
    when its effect committed. This is usually a batch's first statement, so it goes in pipeline
    mode: the transaction's BEGIN travels with it instead of costing a round trip of its own.
    """
    if not event_ids:
        return set()
    driver = await driver_connection(conn)
    async with driver.pipeline():
        cursor = await driver.execute(_CLAIM, {"consumer": consumer, "event_ids": list(event_ids)})
    return {row[0] for row in await cursor.fetchall()}
