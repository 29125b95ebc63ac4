"""Exactly-once effect: a consumer records each event id it applies, in the same transaction.

Records are kept for SLUICE_DEDUPE_RETENTION_DAYS; each consumer process prunes its own.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import structlog

from sluice.db import DatabaseUnavailableError, autocommit, driver_connection

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

log = structlog.get_logger(__name__)

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


# Old records of one consumer, a batch at a time, so no delete holds many locks for long.
_PRUNE = """
    DELETE FROM consumer_dedupe WHERE ctid = ANY(ARRAY(
        SELECT ctid FROM consumer_dedupe
        WHERE consumer = %(consumer)s AND applied_at < now() - make_interval(days => %(days)s)
        LIMIT %(batch)s))
    """


async def prune_claims(
    engine: AsyncEngine, consumer: str, retention_days: int, *, batch: int = 10_000
) -> int:
    """Delete `consumer`'s records older than `retention_days`; returns how many went.

    A record only has to outlive every redelivery of its event: Kafka's retention of the topic,
    and the age of anything one would replay. The retention setting must be longer than both.
    """
    params = {"consumer": consumer, "days": retention_days, "batch": batch}
    pruned = 0
    while True:
        async with autocommit(engine) as conn:
            cursor = await (await driver_connection(conn)).execute(_PRUNE, params)
        pruned += cursor.rowcount
        if cursor.rowcount < batch:
            return pruned


async def keep_pruned(
    engine: AsyncEngine, consumer: str, retention_days: int, every_seconds: float = 3600.0
) -> None:
    """Prune `consumer`'s old records now and then, until cancelled; an outage waits a turn."""
    while True:
        try:
            pruned = await prune_claims(engine, consumer, retention_days)
        except DatabaseUnavailableError as exc:
            log.warning("consumer.dedupe_prune_failed", consumer=consumer, error=str(exc))
        else:
            if pruned:
                log.info("consumer.dedupe_pruned", consumer=consumer, records=pruned)
        await asyncio.sleep(every_seconds)
