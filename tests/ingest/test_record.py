"""Recording events: repeats of a stored event, however the batch met it."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import psycopg

from devkit.simulate import square_event
from ingest.record import NewEvent, Recorded, record_events_on
from ingest.square_events import square_new_event
from schemas.square import SquareEvent
from tests.support.services import libpq_url
from tests.support.waiting import eventually

if TYPE_CHECKING:
    from collections.abc import Mapping

Conn = psycopg.Connection[tuple[Any, ...]]


def delivery(
    body: dict[str, Any], headers: Mapping[str, str], signature_key: str | None = "1:abcdef"
) -> NewEvent:
    text = json.dumps(body)
    return square_new_event(
        SquareEvent.model_validate_json(text),
        text,
        event_id=uuid.uuid4(),
        received_at=datetime.now(UTC),
        headers=headers,
        signature_key=signature_key,
    )


def repeats(db: Conn) -> list[tuple[Any, ...]]:
    return db.execute(
        "SELECT event_id, headers->>'square-retry-number', signature_key"
        " FROM delivery_repeats ORDER BY id"
    ).fetchall()


async def test_repeats_in_one_batch_and_of_an_earlier_one_are_each_recorded(
    database_url: str, db: Conn
) -> None:
    body = square_event("booking.created")
    first, second, third = (delivery(body, {"square-retry-number": str(n)}) for n in range(3))
    async with await psycopg.AsyncConnection.connect(
        libpq_url(database_url), autocommit=True
    ) as pg:
        assert await record_events_on(pg, [first, second]) == [
            Recorded(first.id, duplicate=False),
            Recorded(first.id, duplicate=True),
        ]
        assert await record_events_on(pg, [third]) == [Recorded(first.id, duplicate=True)]
    assert repeats(db) == [(first.id, "1", "1:abcdef"), (first.id, "2", "1:abcdef")]


async def test_a_batch_sent_again_after_its_commit_finds_its_own_events_not_repeats(
    database_url: str, db: Conn
) -> None:
    batch = [delivery(square_event("booking.created"), {}) for _ in range(2)]
    async with await psycopg.AsyncConnection.connect(
        libpq_url(database_url), autocommit=True
    ) as pg:
        first = await record_events_on(pg, batch)
        assert await record_events_on(pg, batch) == first
    assert [r.duplicate for r in first] == [False, False]
    assert repeats(db) == []


async def test_events_that_were_not_delivered_record_no_repeats(
    database_url: str, db: Conn
) -> None:
    # The reconciler and the fetchers meet stored events as a matter of course: not deliveries.
    body = square_event("booking.created")
    events = [delivery(body, {}, signature_key=None) for _ in range(3)]
    async with await psycopg.AsyncConnection.connect(
        libpq_url(database_url), autocommit=True
    ) as pg:
        await record_events_on(pg, events[:2])
        await record_events_on(pg, events[2:])
    assert repeats(db) == []


async def test_repeat_of_an_event_committed_while_the_batch_waited_is_recorded(
    database_url: str, db: Conn
) -> None:
    """The batch's snapshot predates the other commit, so it cannot see the stored event it
    collided with: the id and the repeats come from a second look."""
    body = square_event("booking.created")
    first, again, once_more = (delivery(body, {"square-retry-number": str(n)}) for n in range(3))
    url = libpq_url(database_url)
    async with (
        await psycopg.AsyncConnection.connect(url) as holder,
        await psycopg.AsyncConnection.connect(url, autocommit=True) as racer,
    ):
        await record_events_on(holder, [first])  # in a transaction not yet committed
        racing = asyncio.create_task(record_events_on(racer, [again, once_more]))
        await eventually(
            lambda: (
                db.execute(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND wait_event_type = 'Lock'"
                ).fetchone()
                == (1,)
            ),
            what="the batch to wait for the uncommitted event",
        )
        await holder.commit()
        assert await racing == [Recorded(first.id, duplicate=True)] * 2
    assert repeats(db) == [(first.id, "1", "1:abcdef"), (first.id, "2", "1:abcdef")]
    assert db.execute("SELECT count(*) FROM outbox").fetchone() == (1,)
