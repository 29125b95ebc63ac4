"""The console's events lists that the partitioned store changed: by provider event id (found
through its dedupe key, since the store has no index of its own on the provider's id), and by an
outcome or an entity (found through the outcome rows, each naming its event's partition); and
one event by either id, whatever its id says of its time."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from consumers.jobs import JobsProjection
from consumers.message import ConsumedMessage
from consumers.runtime import ConsumerConfig, ConsumerRuntime
from devkit.simulate import square_event
from recovery.console.events import EventFilter, event_page, list_events
from recovery.journey import find_body, find_journey
from sluice.ids import made_at, new_event_id
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


async def test_outcome_and_entity_lists_find_each_event_in_the_week_that_holds_it(
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

    async def listed(**where: Any) -> list[str]:
        rows, _ = await list_events(engine, EventFilter(**where))
        return [r.id for r in rows]

    # The booking's events newest received first; each once, though the newer has three rows.
    by_entity = [str(older), str(newer)]
    rows, _ = await list_events(engine, EventFilter(entity="bkW"))
    after = (rows[0].listed_at, rows[0].id)
    expected = {
        "stale": [str(older)],
        "duplicate": [str(newer)],
        "dead_lettered": [str(newer)],
    }
    for _ in ("with received_at", "without"):
        assert {o: await listed(outcome=o) for o in expected} == expected
        assert await listed(entity="bkW") == by_entity
        assert await listed(entity="bkW", source="square") == by_entity
        assert await listed(entity="bkW", source="airtable") == []
        assert await listed(entity="bkW", after=after) == [str(newer)]
        assert await listed(entity="bkW", outcome="stale") == [str(older)]
        assert await listed(entity="bkW", outcome="applied") == [str(newer)]
        assert await listed(entity="bkOther") == []
        db.execute("UPDATE consumer_dedupe SET received_at = NULL")
        db.execute("UPDATE event_outcomes SET received_at = NULL")


async def test_an_event_is_found_by_either_id_whatever_its_id_says_of_its_time(
    engine: AsyncEngine,
) -> None:
    """A v7 id names the time of its making, and its event is looked for in the days beside it
    first; an event received far from its id's time, or with a v4 id, is found all the same."""
    long_ago = datetime.now(UTC) - timedelta(days=60)
    made = {"ev-v7": (new_event_id(), None), "ev-far": (new_event_id(), long_ago)}
    (v4,) = await store_events(engine, [square_event("booking.created", event_id="ev-v4")])
    stored = {"ev-v4": v4}
    for provider_id, (event_id, received_at) in made.items():
        body = square_event("booking.created", event_id=provider_id)
        (stored[provider_id],) = await store_events(engine, [body], received_at, [event_id])
    assert made_at(stored["ev-v7"]) is not None
    assert made_at(stored["ev-v4"]) is None

    async def found(ref: str) -> tuple[str | None, ...]:
        journey = await find_journey(engine, ref)
        body = await find_body(engine, ref)
        page = await event_page(engine, ref)
        return (
            None if journey is None else journey["event"]["id"],
            None if body is None else json.loads(body[0])["event_id"],
            None if page is None else page.journey["event"]["id"],
        )

    for provider_id, event_id in stored.items():
        expected = (str(event_id), provider_id, str(event_id))
        assert await found(str(event_id)) == expected
        assert await found(provider_id) == expected
    # Ids made now, at the dawn of v7 time and past any time a datetime holds: none is stored.
    earliest, latest = (
        "00000000-0000-7000-8000-000000000000",
        "ffffffff-ffff-7fff-bfff-ffffffffffff",
    )
    assert made_at(uuid.UUID(earliest)) == datetime(1970, 1, 1, tzinfo=UTC)
    assert made_at(uuid.UUID(latest)) is None
    for unknown in (str(new_event_id()), earliest, latest, str(uuid.uuid4()), "ev-never-stored"):
        assert await found(unknown) == (None, None, None)
