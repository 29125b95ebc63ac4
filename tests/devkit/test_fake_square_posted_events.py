"""`POST /_fake/events`: an event made elsewhere becomes the fake Square's truth, found by the
squareup SDK as any change made in the fake is."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from square import AsyncSquare

from devkit.fakes.square import FakeSquare
from devkit.simulate import SIMULATED_MERCHANT_ID, square_event

NOW = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def fake() -> FakeSquare:
    return FakeSquare(merchant_id=SIMULATED_MERCHANT_ID, clock=lambda: NOW)


def raw_client(fake: FakeSquare) -> httpx.AsyncClient:
    # No Authorization header: the dev endpoint is not under the API token.
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=fake.app), base_url="http://sq")


def sdk_for(fake: FakeSquare) -> AsyncSquare:
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=fake.app))
    return AsyncSquare(token=fake.token, base_url="http://square.test", httpx_client=http)


def made_at(event: dict[str, Any], moment: datetime) -> dict[str, Any]:
    event["created_at"] = moment.isoformat().replace("+00:00", "Z")
    return event


async def test_a_posted_booking_event_is_the_booking_and_a_searchable_event(
    fake: FakeSquare,
) -> None:
    fake.search_enabled = True
    start = NOW + timedelta(days=20)
    event = made_at(
        square_event("booking.updated", entity_id="bk1", version=3, start_at=start),
        NOW - timedelta(hours=2),
    )
    async with raw_client(fake) as http:
        answer = await http.post("/_fake/events", json=event)
    assert answer.status_code == 200
    assert answer.json()["searchable"] is True

    sdk = sdk_for(fake)
    listed = await sdk.bookings.list(
        start_at_min=(start - timedelta(days=1)).isoformat(),
        start_at_max=(start + timedelta(days=1)).isoformat(),
    )
    assert [(b.id, b.version) for b in listed.items] == [("bk1", 3)]
    found = await sdk.events.search_events(query={"sort": {"field": "DEFAULT", "order": "ASC"}})
    assert found.events is not None
    (logged,) = found.events
    assert logged.event_id == event["event_id"]  # as it is: its id and its time
    assert fake.events == [event]
    assert fake.events[0]["created_at"] == event["created_at"]


async def test_customer_events_create_replace_and_delete(fake: FakeSquare) -> None:
    events = [
        square_event("customer.created", entity_id="CUST1", version=1),
        square_event("customer.updated", entity_id="CUST1", version=2),
    ]
    async with raw_client(fake) as http:
        for event in events:
            assert (await http.post("/_fake/events", json=event)).status_code == 200
        assert fake.customers["CUST1"]["version"] == 2
        retrieved = await sdk_for(fake).customers.get("CUST1")
        assert retrieved.customer is not None
        assert retrieved.customer.version == 2

        deleted = square_event("customer.deleted", entity_id="CUST1", version=2)
        assert (await http.post("/_fake/events", json=deleted)).status_code == 200
    assert "CUST1" not in fake.customers
    assert [e["event_id"] for e in fake.events] == [e["event_id"] for e in [*events, deleted]]


async def test_events_posted_while_search_is_disabled_are_never_searchable(
    fake: FakeSquare,
) -> None:
    async with raw_client(fake) as http:
        answer = await http.post(
            "/_fake/events", json=made_at(square_event("booking.created"), NOW)
        )
    assert answer.json()["searchable"] is False
    sdk = sdk_for(fake)
    await sdk.events.enable_events()
    found = await sdk.events.search_events()
    assert found.events is None
    assert len(fake.events) == 1  # in the log all the same, as Square's own record


async def test_the_dev_endpoint_is_outside_the_token_and_the_faults(fake: FakeSquare) -> None:
    fake.fail_next(503)
    async with raw_client(fake) as http:
        answer = await http.post("/_fake/events", json=square_event("booking.created"))
        assert answer.status_code == 200
        assert fake.requests == []  # not one of the API requests tests count
        api = await http.get("/v2/bookings", headers={"authorization": f"Bearer {fake.token}"})
    assert api.status_code == 503  # the planned failure was kept for the API


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda e: e.update(type="payment.created"), "type"),
        (lambda e: e.pop("event_id"), "event_id"),
        (lambda e: e.update(created_at="yesterday"), "created_at"),
        (lambda e: e["data"].update(type="customer"), "data.type"),
        (lambda e: e["data"]["object"].pop("booking"), "data.object.booking.id"),
        (
            lambda e: e["data"]["object"]["booking"].update(version="3"),
            "data.object.booking.version",
        ),
    ],
)
async def test_a_body_that_is_not_an_event_gets_a_400_naming_the_field(
    fake: FakeSquare, change: Any, field: str
) -> None:
    event = square_event("booking.created")
    change(event)
    async with raw_client(fake) as http:
        answer = await http.post("/_fake/events", json=event)
        not_json = await http.post("/_fake/events", content=b"{nope")
    assert answer.status_code == 400
    (error,) = answer.json()["errors"]
    assert error["field"] == field
    assert error["category"] == "INVALID_REQUEST_ERROR"
    assert not_json.status_code == 400
    assert fake.events == []
    assert fake.bookings == {}
