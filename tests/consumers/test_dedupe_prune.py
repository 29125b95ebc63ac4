"""Dedupe records are pruned per consumer once older than the retention, in batches."""

from __future__ import annotations

from typing import TYPE_CHECKING

from consumers.dedupe import claim_events, prune_claims
from sluice.db import create_engine, transaction
from tests.support.rows import scalar

if TYPE_CHECKING:
    from tests.support.consumers import Conn


def records(db: Conn, consumer: str) -> int:
    count: int = scalar(db, "SELECT count(*) FROM consumer_dedupe WHERE consumer = %s", consumer)
    return count


async def test_old_records_of_one_consumer_are_pruned_in_batches(
    database_url: str, db: Conn
) -> None:
    engine = create_engine(database_url, pool_size=1)
    try:
        for consumer in ("prune-a", "prune-b"):
            async with transaction(engine) as conn:
                await claim_events(conn, consumer, [f"{consumer}-{i}" for i in range(7)])
        # Five of each consumer's seven are 40 days old; two are recent.
        db.execute(
            "UPDATE consumer_dedupe SET applied_at = now() - interval '40 days' "
            "WHERE consumer LIKE 'prune-%%' AND right(event_id, 1) < '5'"
        )

        assert await prune_claims(engine, "prune-a", 30, batch=2) == 5
        assert records(db, "prune-a") == 2
        assert records(db, "prune-b") == 7  # another consumer's records are its own business
        assert await prune_claims(engine, "prune-a", 30, batch=2) == 0
        # A longer retention keeps what a shorter one would take.
        assert await prune_claims(engine, "prune-b", 60) == 0
        assert records(db, "prune-b") == 7

        # A pruned event counts as new again: the retention must outlive every redelivery.
        async with transaction(engine) as conn:
            assert await claim_events(conn, "prune-a", ["prune-a-0", "prune-a-6"]) == {"prune-a-0"}
    finally:
        await engine.dispose()


async def test_journey_outcomes_go_with_the_dedupe_records(database_url: str, db: Conn) -> None:
    engine = create_engine(database_url, pool_size=1)
    try:
        for age, consumer in ((40, "prune-a"), (1, "prune-a"), (40, "prune-b")):
            db.execute(
                "INSERT INTO event_outcomes (event_id, consumer, outcome, origin, topic,"
                ' partition, "offset", recorded_at)'
                " VALUES ('e', %s, 'duplicate', 'delivered', 't', 0, 0,"
                " now() - make_interval(days => %s))",
                (consumer, age),
            )
        await prune_claims(engine, "prune-a", 30)
        left = db.execute(
            "SELECT consumer, recorded_at > now() - interval '2 days' FROM event_outcomes"
            " ORDER BY 1, 2"
        ).fetchall()
        assert left == [("prune-a", True), ("prune-b", False)]
    finally:
        await engine.dispose()


async def test_dead_letters_are_kept_their_own_retention_and_zero_keeps_them(
    database_url: str, db: Conn
) -> None:
    engine = create_engine(database_url, pool_size=1)
    try:
        for offset, (age, consumer) in enumerate(((100, "prune-a"), (10, "prune-a"), (100, "b"))):
            db.execute(
                'INSERT INTO dead_letters (consumer, topic, partition, "offset", headers,'
                " error_type, error, created_at)"
                " VALUES (%s, 't', 0, %s, '{}', 'x', 'y', now() - make_interval(days => %s))",
                (consumer, offset, age),
            )
        await prune_claims(engine, "prune-a", 30)  # no dead-letter retention: all kept
        assert scalar(db, "SELECT count(*) FROM dead_letters") == 3
        await prune_claims(engine, "prune-a", 30, dead_letter_days=90)
        left = db.execute('SELECT consumer, "offset" FROM dead_letters ORDER BY 2').fetchall()
        assert left == [("prune-a", 1), ("b", 2)]
    finally:
        await engine.dispose()
