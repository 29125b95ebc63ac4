"""The console's events lists that the partitioned store changed: by provider event id (found
through its dedupe key, since the store has no index of its own on the provider's id), and by an
outcome (found through the outcome rows, each naming its event's partition)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from consumers.jobs import JobsProjection
from consumers.message import ConsumedMessage
from consumers.runtime import ConsumerConfig, ConsumerRuntime
from devkit.simulate import square_event
from recovery.console.events import EventFilter, list_events
from tests.support.recovery import as_consumed, outbox_rows, store_events

if TYPE_CHECKING:
    import psycopg
    from sqlalchemy.ext.asyncio import AsyncEngine


async def test_a_provider_event_id_lists_that_event_alone_in_its_source(
    engine: AsyncEngine,
) -> None:
    bodies = [square_event("booking.created", event_id=f"ev-filter-{n}") for n in range(3)]
    ids = await store_events(engine, bodies)

    for source in (None, "square"):
        rows, more = await list_events(
            engine, EventFilter(source=source, provider_event_id="ev-filter-1")
        )
        assert [(r.id, r.provider_event_id) for r in rows] == [(str(ids[1]), "ev-filter-1")]
        assert not more
    rows, _ = await list_events(
        engine, EventFilter(source="airtable", provider_event_id="ev-filter-1")
    )
    assert rows == []
    rows, _ = await list_events(engine, EventFilter(provider_event_id="ev-never-stored"))
    assert rows == []


async def test_outcome_lists_find_each_event_in_the_week_that_holds_it(
    engine: AsyncEngine, db: psycopg.Connection[Any]
) -> None:
    """An outcome row keeps its event's received_at, which names the partition to read; a row
    without one (written before migration 0017, or from a message whose header is no time) is
    found by id in every partition."""
    long_ago = datetime.now(UTC) - timedelta(days=60)
    (newer,) = await store_events(
        engine, [square_event("booking.updated", entity_id="bkW", version=3)], long_ago
    )
    (older,) = await store_events(
        engine, [square_event("booking.updated", entity_id="bkW", version=2)]
    )
    first, second = as_consumed(outbox_rows(db))
    runtime = ConsumerRuntime(
        JobsProjection(), engine, ConsumerConfig(bootstrap_servers="unused", group_id="jobs")
    )
    await runtime.apply_batch([first])
    await runtime.apply_batch([second])  # an older version: stale
    await runtime.apply_batch([first])  # a redelivery: duplicate
    # Not JSON, naming the newer event, with a receipt header that is no time: dead-lettered.
    headers = (("ce_id", str(newer).encode()), ("ce_receivedat", b"yesterday"))
    await runtime.apply_batch([ConsumedMessage("t", 0, 99, b"bkW", b"{not json", headers)])

    stored = dict(db.execute("SELECT id, received_at FROM inbound_events").fetchall())
    kept = db.execute(
        "SELECT event_id, outcome, received_at FROM consumer_dedupe"
        " UNION ALL SELECT event_id, outcome, received_at FROM event_outcomes"
    ).fetchall()
    assert sorted(kept) == sorted(
        [
            (str(newer), "applied", stored[newer]),
            (str(older), "stale", stored[older]),
            (str(newer), "duplicate", stored[newer]),
            (str(newer), "dead_lettered", None),
        ]
    )
    assert stored[newer] == long_ago

    async def listed(outcome: str) -> list[str]:
        rows, _ = await list_events(engine, EventFilter(outcome=outcome))
        return [r.id for r in rows]

    expected = {"stale": [str(older)], "duplicate": [str(newer)], "dead_lettered": [str(newer)]}
    assert {o: await listed(o) for o in expected} == expected
    db.execute("UPDATE consumer_dedupe SET received_at = NULL")
    db.execute("UPDATE event_outcomes SET received_at = NULL")
    assert {o: await listed(o) for o in expected} == expected
