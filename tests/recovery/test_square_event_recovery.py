"""Recovery from Square's own records: the events a lost delivery never brought (SearchEvents,
from a durable watermark), customers swept by `updated_at`, and bookings weeks ahead; against
the fake Square through the squareup SDK, on a real PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest

from devkit.fakes.square import FakeSquare
from recovery.journey import find_journey
from recovery.runs import default_square_window, reconcile
from sluice.db import create_engine
from tests.support.recovery import apply_as_jobs_consumer, outbox_rows, store_events
from tests.support.services import running_server
from tests.support.square import reconcile_settings

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import psycopg

    from devkit.fakes.faults import RecordedRequest
    from sluice.settings import Settings

NOW = datetime.now(UTC)
RECOVERED = {"sluice-recovered": "square-events-api"}


@pytest.fixture
async def square() -> AsyncIterator[tuple[FakeSquare, str]]:
    fake = FakeSquare(search_enabled=True)
    async with running_server(fake.app) as url:
        yield fake, url


@pytest.fixture
def settings(database_url: str, square: tuple[FakeSquare, str]) -> Settings:
    return reconcile_settings(database_url, *square)


def stored(db: psycopg.Connection[Any]) -> dict[str, dict[str, str]]:
    """Provider event id -> the headers stored with it."""
    return dict(db.execute("SELECT provider_event_id, headers FROM inbound_events").fetchall())


def watermark(db: psycopg.Connection[Any], name: str) -> datetime | None:
    row = db.execute('SELECT watermark FROM recovery_watermarks WHERE "pass" = %s', (name,))
    found = row.fetchone()
    return None if found is None else found[0]


async def test_lost_deliveries_are_recorded_from_squares_events_as_delivered_ones_would_be(
    settings: Settings,
    square: tuple[FakeSquare, str],
    db: psycopg.Connection[Any],
    database_url: str,
) -> None:
    fake, _ = square
    customer = fake.add_customer(given_name="Grace", family_name="Hopper")
    booking = fake.add_booking(NOW + timedelta(days=10), customer_id=customer["id"])
    fake.update_booking(booking["id"], customer_note="gate code 4411")
    events = fake.events
    assert [e["type"] for e in events] == ["customer.created", "booking.created", "booking.updated"]
    # Square delivered the customer; the two booking events were lost.
    engine = create_engine(database_url, pool_size=1)
    try:
        await store_events(engine, [events[0]])
        summary = (await reconcile(settings, "square", engine=engine)).as_json()
        assert summary["errors"] == []
        passes = summary["passes"]
        assert passes["events"]["scanned"] == 3
        assert (passes["events"]["missing"], passes["events"]["recorded"]) == (2, 2)
        headers = stored(db)
        assert set(headers) == {e["event_id"] for e in events}  # no synthetic event besides
        assert headers[events[0]["event_id"]] == {"square-retry-number": "0"}  # as delivered
        assert headers[events[1]["event_id"]] == RECOVERED
        assert headers[events[2]["event_id"]] == RECOVERED
        # The booking 10 days out is outside the window; the customer swept is stored (by its
        # delivery, not applied yet) at the version Square has: nothing synthetic for either.
        assert passes["bookings"]["scanned"] == 0
        assert (passes["customers"]["scanned"], passes["customers"]["recorded"]) == (1, 0)
        rows = outbox_rows(db)
        recovered = [r for r in rows if r["headers"].get("sluice-recovered")]
        assert [r["payload"]["data"]["type"] for r in recovered] == [
            "booking.created",
            "booking.updated",
        ]
        assert recovered[1]["payload"]["data"]["data"]["object"]["booking"]["customer_note"] == (
            "gate code 4411"
        )
        outcome = await apply_as_jobs_consumer(database_url, rows)
        assert outcome.dead == []
        job = db.execute("SELECT booking_version, start_at FROM jobs").fetchall()
        assert job == [(1, datetime.fromisoformat(booking["start_at"]))]
        journey = await find_journey(engine, events[2]["event_id"])
        assert journey is not None
        assert {o["origin"] for o in journey["outcomes"]} == {"recovered"}
        assert journey["outcomes"][0]["outcome"] == "applied"
    finally:
        await engine.dispose()
    # The watermark stands at the end of the search; a second run looks again only from it
    # less the overlap, and records nothing twice.
    mark = watermark(db, "square:events")
    assert mark is not None
    assert abs((mark - datetime.now(UTC)).total_seconds()) < 60
    again = (await reconcile(settings, "square")).as_json()
    assert again["passes"]["events"]["recorded"] == 0
    search = [r for r in fake.requests_to("/v2/events") if r.method == "POST"][-1]
    assert search.status == 200
    assert datetime.fromisoformat(again["passes"]["events"]["from"]) == mark - timedelta(hours=1)
    assert len(stored(db)) == 3


async def test_the_watermark_never_passes_an_event_that_is_not_stored(
    settings: Settings, square: tuple[FakeSquare, str], db: psycopg.Connection[Any]
) -> None:
    fake, _ = square
    start = (NOW - timedelta(days=3)).replace(microsecond=0)
    for n in range(250):  # three pages of SearchEvents
        fake.add_customer(given_name=f"C{n}", at=start + timedelta(minutes=n))
    searches: list[int] = []

    def fail_the_second_page(request: RecordedRequest) -> None:
        if request.method == "POST" and request.path == "/v2/events":
            searches.append(request.status)
            if len(searches) == 1:  # every try of the next page fails, the SDK's retries too
                fake.fail_next(500, times=3, path_contains="/v2/events")

    fake.on_request = fail_the_second_page
    first = await reconcile(settings, "square")
    assert "pass:events" in [e.record for e in first.errors]
    # Everything up to the last event of the first page is stored, and the watermark says so.
    assert watermark(db, "square:events") == start + timedelta(minutes=99)
    assert sum(1 for h in stored(db).values() if h == RECOVERED) == 100
    fake.on_request = None
    second = (await reconcile(settings, "square")).as_json()
    assert second["errors"] == []
    events = second["passes"]["events"]
    # From the watermark less the hour's overlap: the first page's last 61 again, then the rest.
    assert events["from"] == (start + timedelta(minutes=39)).isoformat().replace("+00:00", "Z")
    assert (events["scanned"], events["recorded"]) == (211, 150)
    assert sum(1 for h in stored(db).values() if h == RECOVERED) == 250
    mark = watermark(db, "square:events")
    assert mark is not None
    assert mark > NOW


async def test_a_first_run_searches_as_far_back_as_square_keeps_events_or_since(
    settings: Settings, square: tuple[FakeSquare, str], db: psycopg.Connection[Any]
) -> None:
    fake, _ = square
    old = fake.add_customer(given_name="Old", at=NOW - timedelta(days=40))
    recent = fake.add_customer(given_name="Recent", at=NOW - timedelta(days=20))
    newest = fake.add_customer(given_name="Newest", at=NOW - timedelta(days=2))
    summary = (await reconcile(settings, "square", square_since=NOW - timedelta(days=5))).as_json()
    by_id = {e["data"]["id"]: e["event_id"] for e in fake.events}
    headers = stored(db)
    assert headers.get(by_id[newest["id"]]) == RECOVERED
    assert by_id[recent["id"]] not in headers  # before --since
    assert summary["passes"]["events"]["from"] == (NOW - timedelta(days=5)).isoformat().replace(
        "+00:00", "Z"
    )
    # Without --since a first search goes back to Square's 28 days, not further.
    db.execute("DELETE FROM recovery_watermarks")
    summary = (await reconcile(settings, "square")).as_json()
    headers = stored(db)
    assert headers.get(by_id[recent["id"]]) == RECOVERED
    assert by_id[old["id"]] not in headers
    began = datetime.fromisoformat(summary["passes"]["events"]["from"])
    assert timedelta(days=27) < NOW - began <= timedelta(days=28)
    # The customer sweep (a first one: every customer) still brings the old one's state.
    assert f"reconcile:customer:{old['id']}:0" in headers


async def test_customers_are_swept_by_when_they_changed_without_any_booking(
    settings: Settings,
    square: tuple[FakeSquare, str],
    db: psycopg.Connection[Any],
    database_url: str,
) -> None:
    fake, _ = square
    fake.search_enabled = False  # nothing the event log could tell
    people = [fake.add_customer(given_name=f"P{n}") for n in range(3)]
    sweeps = settings.model_copy(
        update={"square_search_events": False, "square_recovery_overlap_minutes": 0}
    )
    first = (await reconcile(sweeps, "square")).as_json()
    assert first["passes"]["customers"] == {
        "updated_from": None,
        "to": first["passes"]["customers"]["to"],
        "scanned": 3,
        "missing": 3,
        "stale": 0,
        "recorded": 3,
    }
    assert "events" not in first["passes"]
    outcome = await apply_as_jobs_consumer(database_url, outbox_rows(db))
    assert outcome.applied == 3
    db.execute("DELETE FROM outbox")
    # The fake dates changes to the second: this one is a second after the first sweep.
    await asyncio.sleep(1.1)
    fake.update_customer(people[1]["id"], family_name="Changed")
    second = (await reconcile(sweeps, "square")).as_json()
    customers = second["passes"]["customers"]
    assert customers["updated_from"] == first["passes"]["customers"]["to"]
    assert (customers["scanned"], customers["stale"], customers["recorded"]) == (1, 1, 1)
    outcome = await apply_as_jobs_consumer(database_url, outbox_rows(db))
    names = dict(db.execute("SELECT customer_id, display_name FROM square_customers").fetchall())
    assert names[people[1]["id"]] == "P1 Changed"
    assert names[people[0]["id"]] == "P0 Lovelace"


async def test_the_nightly_run_finds_bookings_weeks_ahead(
    settings: Settings, square: tuple[FakeSquare, str], db: psycopg.Connection[Any]
) -> None:
    fake, _ = square
    fake.search_enabled = False  # lost, and not in the event log either
    customer = fake.add_customer()
    far = fake.add_booking(NOW + timedelta(days=40), customer_id=customer["id"])
    beyond = fake.add_booking(NOW + timedelta(days=120), customer_id=customer["id"])
    frequent = (await reconcile(settings, "square")).as_json()
    assert frequent["passes"]["bookings"]["scanned"] == 0
    assert f"reconcile:booking:{far['id']}:0" not in stored(db)
    nightly = (
        await reconcile(settings, "square", square_window=default_square_window(ahead_days=90))
    ).as_json()
    bookings = nightly["passes"]["bookings"]
    assert (bookings["scanned"], bookings["missing"], bookings["recorded"]) == (1, 1, 1)
    assert f"reconcile:booking:{far['id']}:0" in stored(db)
    assert f"reconcile:booking:{beyond['id']}:0" not in stored(db)
    # Square's 31-day windows: 92 days in three requests or more.
    windows = [r for r in fake.requests_to("/v2/bookings") if r.method == "GET"]
    assert len(windows) >= 3
