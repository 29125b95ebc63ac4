"""The event store keeps weeks of events and drops whole weeks; dedupe outlives them by the
provider's redelivery horizon; a store from before partitioning converts in place."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import psycopg
import pytest

from devkit.simulate import square_event
from ingest.partitions import partitions, upkeep
from ingest.record import NewEvent, record_events_on
from ingest.square_events import square_new_event
from schemas.event_partitions import (
    DEFAULT_PARTITION,
    WEEKS_AHEAD,
    before_partition,
    week_partition,
    week_start,
)
from schemas.square import SquareEvent
from sluice.db import autocommit, create_engine
from sluice.migrate import upgrade
from tests.support.services import libpq_url

if TYPE_CHECKING:
    from collections.abc import Iterator

    from sqlalchemy.ext.asyncio import AsyncEngine

    from tests.support.services import PostgresCluster

Conn = psycopg.Connection[tuple[Any, ...]]
RETENTION = 90


def square_delivery(received_at: datetime, body: dict[str, Any] | None = None) -> NewEvent:
    text = json.dumps(body or square_event("booking.created"))
    return square_new_event(
        SquareEvent.model_validate_json(text),
        text,
        event_id=uuid.uuid4(),
        received_at=received_at,
        headers={},
    )


def again(event: NewEvent, received_at: datetime) -> NewEvent:
    """A later delivery of `event`: the same provider event id, a new id of ours."""
    return dataclasses.replace(event, id=uuid.uuid4(), received_at=received_at)


async def duplicate(database_url: str, event: NewEvent) -> bool:
    async with await psycopg.AsyncConnection.connect(
        libpq_url(database_url), autocommit=True
    ) as pg:
        [recorded] = await record_events_on(pg, [event])
    return recorded.duplicate


def partition_of(db: Conn, event: NewEvent) -> str | None:
    row = db.execute(
        "SELECT tableoid::regclass::text FROM inbound_events WHERE id = %s", [event.id]
    ).fetchone()
    return None if row is None else str(row[0])


async def test_a_new_store_has_the_weeks_ahead_a_before_partition_and_a_default(
    engine: AsyncEngine,
) -> None:
    async with autocommit(engine) as conn:
        found = await partitions(conn)
    names = [p.name for p in found]
    assert names[0].startswith("inbound_events_before_")
    assert names[-1] == DEFAULT_PARTITION
    before, weeks = found[0], found[1:-1]
    assert len(weeks) == WEEKS_AHEAD + 1
    # The weeks start where the before partition ends, the Monday after the migration ran, and
    # follow one another without a gap.
    assert before.upper == weeks[0].lower
    assert [w.lower for w in weeks[1:]] == [w.upper for w in weeks[:-1]]
    assert all(w.upper - w.lower == timedelta(days=7) for w in weeks)  # type: ignore[operator]
    assert weeks[0].name == week_partition(weeks[0].lower)  # type: ignore[arg-type]
    # The template store was migrated when the session began: this week's Monday if a week
    # began since then, otherwise next week's.
    this_week = week_start(datetime.now(UTC))
    assert weeks[0].lower in {this_week, this_week + timedelta(days=7)}


async def test_upkeep_creates_weeks_drops_expired_ones_and_dedupe_outlives_them_by_the_horizon(
    database_url: str, engine: AsyncEngine, db: Conn
) -> None:
    now = datetime.now(UTC)
    old = square_delivery(now)
    assert not await duplicate(database_url, old)

    # 97 days on: the week that held the event has gone (its end is 90 days old), but Square's
    # 72-hour horizon beyond the longest the event could have been kept (90 days and a week)
    # has not, so a delivery of it again is still a duplicate, stored nowhere.
    later = now + timedelta(days=97)
    done = await upkeep(engine, RETENTION, now=later)
    assert week_partition(week_start(later)) in done.created
    assert any(name.startswith("inbound_events_before_") for name in done.dropped)
    assert partition_of(db, old) is None
    assert await duplicate(database_url, again(old, later))

    # 101 days on the key has gone too: the provider can no longer send it, and one that came
    # anyway would be stored as new.
    past_horizon = now + timedelta(days=101)
    done = await upkeep(engine, RETENTION, now=past_horizon)
    assert done.keys_pruned == 1
    assert not await duplicate(database_url, again(old, past_horizon))


async def test_a_retention_of_zero_keeps_every_week_and_key(
    database_url: str, engine: AsyncEngine, db: Conn
) -> None:
    now = datetime.now(UTC)
    event = square_delivery(now)
    await duplicate(database_url, event)
    done = await upkeep(engine, 0, now=now + timedelta(days=400))
    assert done.dropped == []
    assert done.keys_pruned == 0
    assert partition_of(db, event) is not None
    assert await duplicate(database_url, again(event, now + timedelta(days=400)))


async def test_an_event_no_week_covers_lands_in_the_default_partition_and_moves_to_its_week(
    database_url: str, engine: AsyncEngine, db: Conn
) -> None:
    far = datetime.now(UTC) + timedelta(days=300)
    event = square_delivery(far)
    assert not await duplicate(database_url, event)
    assert partition_of(db, event) == DEFAULT_PARTITION

    done = await upkeep(engine, RETENTION, now=far)
    assert done.moved_from_default == 1
    assert partition_of(db, event) == week_partition(week_start(far))
    assert db.execute(f"SELECT count(*) FROM {DEFAULT_PARTITION}").fetchone() == (0,)  # noqa: S608


async def test_two_upkeeps_at_once_do_the_work_once(engine: AsyncEngine) -> None:
    far = datetime.now(UTC) + timedelta(days=200)
    async with autocommit(engine) as conn:
        before = len(await partitions(conn))
    runs = await asyncio.gather(*(upkeep(engine, RETENTION, now=far) for _ in range(3)))
    created = [name for run in runs for name in run.created]
    dropped = [name for run in runs for name in run.dropped]
    assert created
    assert len(created) == len(set(created))
    async with autocommit(engine) as conn:
        assert len(await partitions(conn)) == before + len(created) - len(dropped)


@pytest.fixture
def store_before_partitioning(postgres_cluster: PostgresCluster) -> Iterator[str]:
    name = f"sluice_convert_{uuid.uuid4().hex[:12]}"
    postgres_cluster.execute(f'CREATE DATABASE "{name}"')
    try:
        url = postgres_cluster.url_for(name)
        upgrade(url, "0015")
        yield url
    finally:
        postgres_cluster.drop_database(name)


async def test_migration_converts_a_store_keeping_every_event_and_its_dedupe(
    store_before_partitioning: str,
) -> None:
    url = store_before_partitioning
    now = datetime.now(UTC)
    events = [square_delivery(now - timedelta(days=d)) for d in (1, 10, 40)]
    with psycopg.connect(libpq_url(url), autocommit=True) as db:
        for event in events:
            db.execute(
                "INSERT INTO inbound_events (id, source, provider_event_id, event_type,"
                " occurred_at, received_at, body, headers) VALUES (%s, %s, %s, %s, %s, %s, %s,"
                " '{}')",
                [
                    event.id,
                    event.source,
                    event.provider_event_id,
                    event.event_type,
                    event.occurred_at,
                    event.received_at,
                    event.body,
                ],
            )
    upgrade(url)

    with psycopg.connect(libpq_url(url), autocommit=True) as db:
        stored = db.execute("SELECT id, body FROM inbound_events ORDER BY received_at").fetchall()
        assert stored == [(e.id, e.body) for e in reversed(events)]
        # The before partition ends on the Monday after the migration ran (taken on both sides
        # of it, should a week begin in between).
        [where] = {partition_of(db, e) for e in events}
        assert where in {
            before_partition(week_start(moment) + timedelta(days=7))
            for moment in (now, datetime.now(UTC))
        }
    for event in events:
        assert await duplicate(url, again(event, now))
    assert not await duplicate(url, square_delivery(now))

    engine = create_engine(url, pool_size=2, application_name="sluice-test")
    try:
        async with autocommit(engine) as conn:
            names = [p.name for p in await partitions(conn)]
    finally:
        await engine.dispose()
    assert names[-1] == DEFAULT_PARTITION
    assert len(names) == WEEKS_AHEAD + 3
