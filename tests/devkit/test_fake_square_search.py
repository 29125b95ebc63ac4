"""The fake Square's event log, SearchEvents and SearchCustomers, through the squareup SDK."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from square import AsyncSquare
from square.core.api_error import ApiError

from devkit.fakes.square import FakeSquare
from devkit.simulate import square_event
from schemas.square import SquareEvent

NOW = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def fake() -> FakeSquare:
    return FakeSquare(clock=lambda: NOW)


def client_for(fake: FakeSquare) -> AsyncSquare:
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=fake.app))
    return AsyncSquare(token=fake.token, base_url="http://square.test", httpx_client=http)


def refusal(caught: pytest.ExceptionInfo[ApiError]) -> dict[str, Any]:
    assert caught.value.status_code == 400
    body = caught.value.body
    assert isinstance(body, dict)
    (error,) = body["errors"]
    assert error["category"] == "INVALID_REQUEST_ERROR"
    assert isinstance(error, dict)
    return error


NO_RETRY: Any = {"max_retries": 0}


# ---- the event log ----


def test_every_change_appends_its_event_with_the_object_as_it_was(fake: FakeSquare) -> None:
    customer = fake.add_customer(given_name="Grace")
    booking = fake.add_booking(NOW + timedelta(days=3), customer_id=customer["id"])
    fake.update_booking(booking["id"], status="CANCELLED_BY_CUSTOMER")
    fake.update_customer(customer["id"], given_name="Gracie")
    fake.delete_customer(customer["id"])

    events = fake.events
    assert [e["type"] for e in events] == [
        "customer.created",
        "booking.created",
        "booking.updated",
        "customer.updated",
        "customer.deleted",
    ]
    created, updated = events[1], events[2]
    assert created["data"]["id"] == f"{booking['id']}:0"
    assert updated["data"]["id"] == f"{booking['id']}:1"
    # A copy of each moment, not a reference to the live object.
    assert created["data"]["object"]["booking"]["status"] == "ACCEPTED"
    assert updated["data"]["object"]["booking"]["status"] == "CANCELLED_BY_CUSTOMER"
    assert events[0]["data"]["object"]["customer"]["given_name"] == "Grace"
    assert events[4]["data"]["deleted"] is True
    assert customer["id"] not in fake.customers
    # Bookings name their location; customers belong to the merchant only.
    assert created["location_id"] == fake.location_id
    assert "location_id" not in events[0]
    for event in events:
        assert event["merchant_id"] == fake.merchant_id
        assert uuid.UUID(event["event_id"])
        assert event["created_at"] == "2030-06-01T12:00:00.000Z"
        SquareEvent.model_validate(event)  # what ingest accepts
    # The fake and `sluice simulate` build one envelope.
    assert set(square_event("booking.updated")) == set(updated)
    assert set(square_event("booking.updated")["data"]) == set(updated["data"])


def test_at_dates_a_change_and_latest_event_is_a_copy_to_deliver(fake: FakeSquare) -> None:
    earlier = NOW - timedelta(days=30)
    booking = fake.add_booking(NOW + timedelta(days=1), at=earlier)
    assert booking["created_at"] == "2030-05-02T12:00:00Z"
    assert fake.latest_event()["created_at"] == "2030-05-02T12:00:00.000Z"
    other = fake.add_booking(NOW + timedelta(days=2))

    delivered = fake.latest_event(booking["id"])
    assert delivered["data"]["id"] == f"{booking['id']}:0"
    delivered["type"] = "tampered"
    assert fake.events[0]["type"] == "booking.created"
    assert fake.latest_event()["data"]["object"]["booking"]["id"] == other["id"]
    with pytest.raises(LookupError):
        fake.latest_event("nobody")


# ---- SearchEvents ----


async def test_search_pages_through_events_with_cursors(fake: FakeSquare) -> None:
    client = client_for(fake)
    await client.events.enable_events()
    made = [fake.add_booking(NOW, at=NOW - timedelta(minutes=10 - i))["id"] for i in range(7)]

    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        page = await client.events.search_events(
            limit=3, cursor=cursor, query={"sort": {"field": "DEFAULT", "order": "ASC"}}
        )
        assert page.events is not None
        assert page.metadata is not None
        assert [m.event_id for m in page.metadata] == [e.event_id for e in page.events]
        assert {m.api_version for m in page.metadata} == {fake.api_version}
        pages.append([e.data.id.split(":")[0] for e in page.events if e.data and e.data.id])
        cursor = page.cursor
        if cursor is None:
            break
    assert [len(p) for p in pages] == [3, 3, 1]
    assert [b for p in pages for b in p] == made  # oldest first, as asked
    first = await client.events.search_events(limit=2)
    assert first.events is not None
    assert [e.data.object["booking"]["id"] for e in first.events if e.data and e.data.object] == [
        made[6],
        made[5],
    ]  # newest first by default


async def test_a_page_in_progress_is_not_shifted_by_new_events(fake: FakeSquare) -> None:
    client = client_for(fake)
    fake.search_enabled = True
    for i in range(4):
        fake.add_booking(NOW, at=NOW - timedelta(minutes=i))
    first = await client.events.search_events(limit=2)
    fake.add_booking(NOW)  # newest: would push everything down one place
    assert first.cursor is not None
    rest = await client.events.search_events(limit=2, cursor=first.cursor)
    assert first.events is not None
    assert rest.events is not None
    seen = [e.event_id for e in first.events + rest.events]
    assert len(set(seen)) == 4
    assert rest.cursor is None


async def test_search_filters_by_type_location_merchant_and_inclusive_time(
    fake: FakeSquare,
) -> None:
    fake.search_enabled = True
    customer = fake.add_customer(at=NOW - timedelta(hours=3))
    booking = fake.add_booking(NOW, at=NOW - timedelta(hours=2))
    fake.update_booking(booking["id"], at=NOW - timedelta(hours=1), status="DECLINED")
    client = client_for(fake)

    async def types(query: Any) -> list[str | None]:
        found = await client.events.search_events(query=query)
        return [e.type for e in found.events or []]

    assert await types({"filter": {"event_types": ["booking.updated"]}}) == ["booking.updated"]
    assert await types({"filter": {"location_ids": [fake.location_id]}}) == [
        "booking.updated",
        "booking.created",
    ]
    assert await types({"filter": {"merchant_ids": ["MLsomeoneelse"]}}) == []
    window = {
        "start_at": (NOW - timedelta(hours=3)).isoformat(),
        "end_at": (NOW - timedelta(hours=2)).isoformat(),
    }
    assert await types({"filter": {"created_at": window}}) == [
        "booking.created",
        "customer.created",
    ]  # both ends of the range count
    assert customer["id"] in {e["data"]["id"] for e in fake.events}


async def test_only_the_last_28_days_are_searchable(fake: FakeSquare) -> None:
    fake.search_enabled = True
    fake.add_customer(customer_id="OLD", at=NOW - timedelta(days=28, seconds=1))
    fake.add_customer(customer_id="RECENT", at=NOW - timedelta(days=27, hours=23))
    client = client_for(fake)
    since = {"created_at": {"start_at": (NOW - timedelta(days=60)).isoformat()}}
    found = await client.events.search_events(query={"filter": since})
    assert [e.data.id for e in found.events or [] if e.data] == ["RECENT"]
    assert len(fake.events) == 2  # the log keeps it; only the search forgets it


async def test_events_made_while_search_is_disabled_are_never_found(fake: FakeSquare) -> None:
    client = client_for(fake)
    assert fake.search_enabled is False  # Square's default
    fake.add_customer(customer_id="BEFORE")
    assert (await client.events.search_events()).events is None  # an empty answer: `{}`
    await client.events.enable_events()
    fake.add_customer(customer_id="ENABLED")
    await client.events.disable_events()
    assert fake.search_enabled is False
    fake.add_customer(customer_id="PAUSED")
    found_while_off = await client.events.search_events()
    await client.events.enable_events()
    found = await client.events.search_events()
    assert [e.data.id for e in found_while_off.events or [] if e.data] == ["ENABLED"]
    assert [e.data.id for e in found.events or [] if e.data] == ["ENABLED"]


async def test_a_cursor_only_works_with_its_own_query(fake: FakeSquare) -> None:
    fake.search_enabled = True
    for _ in range(3):
        fake.add_customer()
    client = client_for(fake)
    query: Any = {"filter": {"event_types": ["customer.created"]}}
    first = await client.events.search_events(limit=1, query=query)
    assert first.cursor is not None
    with pytest.raises(ApiError) as caught:
        await client.events.search_events(
            limit=1, cursor=first.cursor, query={"sort": {"order": "ASC"}}, request_options=NO_RETRY
        )
    error = refusal(caught)
    assert (error["code"], error["field"]) == ("INVALID_CURSOR", "cursor")
    with pytest.raises(ApiError) as garbled:
        await client.events.search_events(cursor="not-a-cursor", request_options=NO_RETRY)
    assert refusal(garbled)["code"] == "INVALID_CURSOR"
    again = await client.events.search_events(limit=1, cursor=first.cursor, query=query)
    assert again.events is not None  # the original query still pages


@pytest.mark.parametrize(
    ("request_body", "code", "field"),
    [
        ({"limit": 0}, "VALUE_TOO_LOW", "limit"),
        ({"limit": 101}, "VALUE_TOO_HIGH", "limit"),
        (
            {"query": {"filter": {"created_at": {"start_at": "yesterday"}}}},
            "INVALID_TIME",
            "query.filter.created_at.start_at",
        ),
        (
            {
                "query": {
                    "filter": {
                        "created_at": {
                            "start_at": "2030-06-02T00:00:00Z",
                            "end_at": "2030-06-01T00:00:00Z",
                        }
                    }
                }
            },
            "INVALID_TIME_RANGE",
            "query.filter.created_at",
        ),
        ({"query": {"sort": {"order": "SIDEWAYS"}}}, "INVALID_SORT_ORDER", "query.sort.order"),
        ({"query": {"sort": {"field": "TYPE"}}}, "INVALID_ENUM_VALUE", "query.sort.field"),
        ({"query": {"filter": {"event_types": "booking.created"}}}, "EXPECTED_ARRAY", None),
    ],
)
async def test_bad_search_input_is_a_400_with_squares_code(
    fake: FakeSquare, request_body: dict[str, Any], code: str, field: str | None
) -> None:
    with pytest.raises(ApiError) as caught:
        await client_for(fake).events.search_events(**request_body, request_options=NO_RETRY)
    error = refusal(caught)
    assert error["code"] == code
    if field is not None:
        assert error["field"] == field


async def test_a_body_that_is_not_json_is_a_400_not_a_crash(fake: FakeSquare) -> None:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=fake.app), base_url="http://square.test"
    ) as http:
        headers = {"authorization": f"Bearer {fake.token}"}
        for path in ("/v2/events", "/v2/customers/search"):
            for body in (b"{not json", b"[1, 2]"):
                answer = await http.post(path, content=body, headers=headers)
                assert answer.status_code == 400
                (error,) = answer.json()["errors"]
                assert error["code"] in {"EXPECTED_JSON_BODY", "EXPECTED_OBJECT"}


async def test_event_types_and_injected_failures_on_the_events_api(fake: FakeSquare) -> None:
    client = client_for(fake)
    listed = await client.events.list_event_types()
    assert listed.event_types is not None
    assert {"booking.created", "booking.updated", "customer.updated"} <= set(listed.event_types)
    fake.fail_next(503, path_contains="/v2/events")
    with pytest.raises(ApiError) as caught:
        await client.events.search_events(request_options=NO_RETRY)
    assert caught.value.status_code == 503
    await client.events.search_events()
    assert [(r.path, r.status) for r in fake.requests] == [
        ("/v2/events/types", 200),
        ("/v2/events", 503),
        ("/v2/events", 200),
    ]


# ---- SearchCustomers ----


async def test_search_customers_by_updated_at_pages_in_created_order(fake: FakeSquare) -> None:
    ids = [
        fake.add_customer(given_name=f"C{i}", at=NOW - timedelta(days=10 - i))["id"]
        for i in range(5)
    ]
    boundary = NOW - timedelta(hours=1)
    fake.update_customer(ids[0], at=boundary, note="changed")
    fake.update_customer(ids[3], at=NOW, note="changed")
    fake.update_customer(ids[4], at=NOW + timedelta(seconds=1), note="too late")
    client = client_for(fake)
    query: Any = {
        "filter": {"updated_at": {"start_at": boundary.isoformat(), "end_at": NOW.isoformat()}},
        "sort": {"field": "CREATED_AT", "order": "DESC"},
    }

    found: list[str] = []
    cursor: str | None = None
    requests = 0
    while True:
        page = await client.customers.search(limit=1, cursor=cursor, query=query)
        requests += 1
        found += [c.id for c in page.customers or [] if c.id]
        cursor = page.cursor
        if cursor is None:
            break
    assert found == [ids[3], ids[0]]  # both ends inclusive; newest created first
    assert requests == 2
    counted = await client.customers.search(query=query, count=True)
    assert counted.count == 2


async def test_search_customers_default_sort_and_text_filters(fake: FakeSquare) -> None:
    fake.add_customer(given_name="Zed", family_name="Adams", email_address="zed@shop.example")
    fake.add_customer(given_name="Ada", family_name="Zorn", email_address="ada@home.example")
    fake.add_customer(given_name="Bea", family_name="Young", email_address="bea@shop.example")
    client = client_for(fake)

    everyone = await client.customers.search()
    assert [c.given_name for c in everyone.customers or []] == ["Ada", "Bea", "Zed"]
    shop = await client.customers.search(query={"filter": {"email_address": {"fuzzy": "shop"}}})
    assert [c.given_name for c in shop.customers or []] == ["Bea", "Zed"]
    exact = await client.customers.search(
        query={"filter": {"email_address": {"exact": "ADA@home.example"}}}
    )
    assert [c.given_name for c in exact.customers or []] == ["Ada"]
    nobody = await client.customers.search(
        query={"filter": {"created_at": {"end_at": (NOW - timedelta(days=1)).isoformat()}}}
    )
    assert nobody.customers is None  # Square answers `{}` when nothing matches


@pytest.mark.parametrize(
    ("request_body", "code", "field"),
    [
        ({"limit": 0}, "VALUE_TOO_LOW", "limit"),
        ({"limit": 101}, "VALUE_TOO_HIGH", "limit"),
        ({"query": {"sort": {"field": "GIVEN_NAME"}}}, "INVALID_ENUM_VALUE", "query.sort.field"),
        (
            {"query": {"filter": {"group_ids": {"any": ["G1"]}}}},
            "BAD_REQUEST",
            "query.filter.group_ids",
        ),
        (
            {"query": {"filter": {"updated_at": {"end_at": "2030-13-01"}}}},
            "INVALID_TIME",
            "query.filter.updated_at.end_at",
        ),
    ],
)
async def test_bad_customer_search_is_a_400_with_squares_code(
    fake: FakeSquare, request_body: dict[str, Any], code: str, field: str
) -> None:
    with pytest.raises(ApiError) as caught:
        await client_for(fake).customers.search(**request_body, request_options=NO_RETRY)
    error = refusal(caught)
    assert (error["code"], error["field"]) == (code, field)


async def test_a_customer_cursor_is_refused_with_another_query(fake: FakeSquare) -> None:
    for i in range(3):
        fake.add_customer(given_name=f"P{i}")
    client = client_for(fake)
    first = await client.customers.search(limit=1)
    assert first.cursor is not None
    with pytest.raises(ApiError) as caught:
        await client.customers.search(
            limit=1,
            cursor=first.cursor,
            query={"sort": {"field": "CREATED_AT"}},
            request_options=NO_RETRY,
        )
    assert refusal(caught)["code"] == "INVALID_CURSOR"
    fake.fail_next(429, path_contains="/v2/customers/search", retry_after=1)
    with pytest.raises(ApiError) as limited:
        await client.customers.search(request_options=NO_RETRY)
    assert limited.value.status_code == 429
