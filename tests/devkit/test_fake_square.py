from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
from square import AsyncSquare
from square.core.api_error import ApiError

from devkit.fakes.square import FakeSquare


@pytest.fixture
def fake() -> FakeSquare:
    return FakeSquare()


def client_for(fake: FakeSquare) -> AsyncSquare:
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=fake.app))
    return AsyncSquare(token=fake.token, base_url="http://square.test", httpx_client=http)


async def test_sdk_pages_through_bookings_with_cursors(fake: FakeSquare) -> None:
    now = datetime.now(UTC)
    made = {fake.add_booking(now + timedelta(minutes=i))["id"] for i in range(7)}
    fake.add_booking(now + timedelta(days=3))  # outside the window
    pager = await client_for(fake).bookings.list(
        start_at_min=(now - timedelta(minutes=1)).isoformat(),
        start_at_max=(now + timedelta(days=1)).isoformat(),
        limit=3,
    )
    seen = [b.id async for b in pager]
    assert set(seen) == made
    assert len(seen) == 7
    listed = fake.requests_to("/v2/bookings")
    assert [r.query.get("cursor") is None for r in listed] == [True, False, False]


async def test_window_over_31_days_is_refused_in_square_format(fake: FakeSquare) -> None:
    now = datetime.now(UTC)
    with pytest.raises(ApiError) as caught:
        await client_for(fake).bookings.list(
            start_at_min=now.isoformat(),
            start_at_max=(now + timedelta(days=31, seconds=1)).isoformat(),
            request_options={"max_retries": 0},
        )
    assert caught.value.status_code == 400
    body = caught.value.body
    assert isinstance(body, dict)
    (error,) = body["errors"]
    assert error["category"] == "INVALID_REQUEST_ERROR"
    assert set(error) >= {"category", "code", "detail"}


async def test_wrong_token_and_injected_failures(fake: FakeSquare) -> None:
    customer = fake.add_customer()
    fake.fail_next(503, path_contains="/v2/customers/")
    client = client_for(fake)
    with pytest.raises(ApiError) as caught:
        await client.customers.get(customer_id=customer["id"], request_options={"max_retries": 0})
    assert caught.value.status_code == 503
    got = await client.customers.get(customer_id=customer["id"])
    assert got.customer is not None
    assert got.customer.version == 0
    stranger = AsyncSquare(
        token="EAAAwrong",  # noqa: S106
        base_url="http://square.test",
        httpx_client=httpx.AsyncClient(transport=httpx.ASGITransport(app=fake.app)),
    )
    with pytest.raises(ApiError) as refused:
        await stranger.customers.get(customer_id=customer["id"])
    assert refused.value.status_code == 401
    assert [r.status for r in fake.requests] == [503, 200, 401]
