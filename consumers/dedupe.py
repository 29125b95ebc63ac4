"""Exactly-once effect: a consumer records each event id it applies, in the same transaction.

The record is also that event's journey through this consumer (consumers/journey.py): where the
message came from and sat on Kafka, the entity it is about, and whether it was applied or stale.
Records are kept for SLUICE_DEDUPE_RETENTION_DAYS; each consumer process prunes its own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import structlog

from sluice.db import driver_connection
from sluice.jsontext import json_text
from sluice.prune import BATCH, HOURLY, batched_delete, delete_in_batches, keep_pruning

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

    from consumers.message import ConsumedMessage

log = structlog.get_logger(__name__)

# Run on the driver connection (psycopg placeholders): see claim_events. The document is read
# as jsonb, parsed once: `->>` on json text parses the element again for every field it reads.
_CLAIM = """
    INSERT INTO consumer_dedupe
        (consumer, event_id, origin, topic, partition, "offset", entity_key, published_at,
         received_at, outcome, detail)
    SELECT %(consumer)s, c->>0, c->>1, c->>2, CAST(c->>3 AS int), CAST(c->>4 AS bigint),
           c->>5, to_timestamp(CAST(c->>6 AS bigint) / 1000.0), CAST(c->>7 AS timestamptz),
           COALESCE(c->>8, 'applied'), c->9
    FROM jsonb_array_elements(CAST(%(claims)s AS jsonb)) AS c
    ON CONFLICT DO NOTHING
    RETURNING event_id
    """
_CORRECT = """
    UPDATE consumer_dedupe AS d SET outcome = s->>1, detail = NULLIF(s->2, 'null')
    FROM jsonb_array_elements(CAST(%(outcomes)s AS jsonb)) AS s
    WHERE d.consumer = %(consumer)s AND d.event_id = s->>0
    """


async def claim_events(
    conn: AsyncConnection,
    consumer: str,
    event_ids: Sequence[str],
    messages: Sequence[ConsumedMessage] | None = None,
    stale: Mapping[str, dict[str, Any]] | None = None,
) -> set[str]:
    """Record `event_ids` as applied by `consumer`; returns those not recorded before. With
    `messages` (one per id), each record keeps where its message came from; the ids in `stale`
    are recorded stale, with why (the row's version and the event's).

    If the caller's transaction rolls back, so do the records: an event counts as applied only
    when its effect committed. This is usually a batch's first statement, so it goes in pipeline
    mode: the transaction's BEGIN travels with it instead of costing a round trip of its own.
    """
    if not event_ids:
        return set()
    params = {"consumer": consumer, "claims": _claims(event_ids, messages, stale or {})}
    driver = await driver_connection(conn)
    async with driver.pipeline():
        cursor = await driver.execute(_CLAIM, params)
    return {row[0] for row in await cursor.fetchall()}


def _claims(
    event_ids: Sequence[str],
    messages: Sequence[ConsumedMessage] | None,
    stale: Mapping[str, dict[str, Any]],
) -> str:
    """The records as one JSON document of arrays (event id, origin, topic, partition, offset,
    key, publish time, the event's receipt, and for a stale one its outcome and detail): far
    cheaper to send than a PostgreSQL array per column."""
    if messages is None:
        claims: list[tuple[Any, ...]] = [(nul_free(e),) for e in event_ids]
    else:
        claims = [
            (
                nul_free(e),
                m.origin,
                m.topic,
                m.partition,
                m.offset,
                None if m.key is None else nul_free(m.key.decode("utf-8", "replace")),
                m.timestamp,
                m.received_at,
            )
            for e, m in zip(event_ids, messages, strict=True)
        ]
    if stale:
        for n, e in enumerate(event_ids):
            if e in stale:
                claims[n] = (*claims[n], *(None,) * (8 - len(claims[n])), "stale", stale[e])
    return json_text(claims)


async def correct_outcomes(
    conn: AsyncConnection, consumer: str, outcomes: Mapping[str, dict[str, Any] | None]
) -> None:
    """Set the outcome of records already claimed: event id -> why it was stale (the row's
    version and the event's), or None for applied. Only for what the claim could not know: a
    row that held a newer version already (rare), so the common batch sends no statement."""
    if not outcomes:
        return
    document = json_text(
        [(e, "applied" if why is None else "stale", why) for e, why in outcomes.items()]
    )
    params = {"consumer": consumer, "outcomes": document}
    await (await driver_connection(conn)).execute(_CORRECT, params)


def nul_free(value: str) -> str:
    # No PostgreSQL text holds NUL, and a key or header may hold anything.
    return value.replace("\x00", "")


# Old records of one consumer: its dedupe records, and the outcomes of its journey
# (consumers/journey.py), which live as long; and its dead letters, which have their own retention.
_AGED = "consumer = %(consumer)s AND {} < now() - make_interval(days => %(days)s)"
_PRUNE_CLAIMS = [
    batched_delete(table, _AGED.format(column))
    for table, column in (("consumer_dedupe", "applied_at"), ("event_outcomes", "recorded_at"))
]
_PRUNE_DEAD_LETTERS = batched_delete("dead_letters", _AGED.format("created_at"))


async def prune_claims(
    engine: AsyncEngine,
    consumer: str,
    retention_days: int,
    *,
    dead_letter_days: int = 0,
    batch: int = BATCH,
) -> int:
    """Delete `consumer`'s records (and journey outcomes) older than `retention_days`, and its
    dead letters older than `dead_letter_days` (0: kept); returns how many dedupe records went.

    A record only has to outlive every redelivery of its event: Kafka's retention of the topic,
    and the age of anything one would replay. The retention setting must be longer than both.
    """
    params = {"consumer": consumer, "days": retention_days}
    pruned = [await delete_in_batches(engine, s, params, batch=batch) for s in _PRUNE_CLAIMS]
    if dead_letter_days:
        params = {"consumer": consumer, "days": dead_letter_days}
        await delete_in_batches(engine, _PRUNE_DEAD_LETTERS, params, batch=batch)
    return pruned[0]


async def keep_pruned(
    engine: AsyncEngine,
    consumer: str,
    retention_days: int,
    dead_letter_days: int = 0,
    every_seconds: float = HOURLY,
) -> None:
    """Prune `consumer`'s old records now and then, until cancelled; an outage waits a turn."""

    async def prune() -> None:
        pruned = await prune_claims(
            engine, consumer, retention_days, dead_letter_days=dead_letter_days
        )
        if pruned:
            log.info("consumer.dedupe_pruned", consumer=consumer, records=pruned)

    await keep_pruning(
        prune, "consumer.dedupe_prune_failed", every_seconds=every_seconds, consumer=consumer
    )
