"""Both fake provider APIs fail on demand through one mechanism (devkit/fakes/faults.py), answer
each injected failure in their provider's error format, and record every request."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from devkit.fakes.airtable import FakeAirtable, add_leads_table
from devkit.fakes.square import FakeSquare

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from devkit.fakes.faults import RecordedRequest


@dataclass(frozen=True)
class Fake:
    fake: FakeSquare | FakeAirtable
    matching: str  # a path a planned failure is for
    other: str  # a path it is not for
    rate_limited: dict[str, Any]  # the first error of the provider's 429 body, in part

    def rate_limit_error(self, body: dict[str, Any]) -> dict[str, Any]:
        (error,) = body["errors"]
        return {k: error[k] for k in self.rate_limited}


def square() -> Fake:
    fake = FakeSquare()
    customer = fake.add_customer()
    return Fake(
        fake,
        f"/v2/customers/{customer['id']}",
        "/v2/merchants/me",
        {"category": "RATE_LIMIT_ERROR"},
    )


def airtable() -> Fake:
    fake = FakeAirtable()
    base = fake.add_base()
    table = add_leads_table(fake, base.id)
    return Fake(
        fake,
        f"/v0/{base.id}/{table.id}",
        f"/v0/meta/bases/{base.id}/tables",
        {"error": "RATE_LIMIT_REACHED"},
    )


@pytest.fixture(params=[square, airtable], ids=["square", "airtable"])
async def provider(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Fake, httpx.AsyncClient]]:
    made: Fake = request.param()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=made.fake.app),
        base_url="http://fake.test",
        headers={"authorization": f"Bearer {made.fake.token}"},
    ) as http:
        yield made, http


async def test_planned_failures_answer_matching_requests_until_used_up(
    provider: tuple[Fake, httpx.AsyncClient],
) -> None:
    made, http = provider
    made.fake.fail_next(503, times=2, path_contains=made.matching, retry_after=7)
    assert (await http.get(made.other)).status_code == 200
    for _ in range(2):
        failed = await http.get(made.matching)
        assert failed.status_code == 503
        assert failed.headers["retry-after"] == "7"
    answered = await http.get(made.matching)
    assert answered.status_code == 200
    assert "retry-after" not in answered.headers
    assert [(r.path, r.status) for r in made.fake.requests] == [
        (made.other, 200),
        (made.matching, 503),
        (made.matching, 503),
        (made.matching, 200),
    ]


async def test_an_injected_429_is_the_providers_rate_limit_answer(
    provider: tuple[Fake, httpx.AsyncClient],
) -> None:
    made, http = provider
    made.fake.fail_next(429)
    refused = await http.get(made.other)
    assert refused.status_code == 429
    assert made.rate_limit_error(refused.json()) == made.rate_limited
    assert (await http.get(made.other)).status_code == 200


async def test_plans_are_used_oldest_first(provider: tuple[Fake, httpx.AsyncClient]) -> None:
    made, http = provider
    made.fake.fail_next(500)
    made.fake.fail_next(503)
    assert [(await http.get(made.other)).status_code for _ in range(3)] == [500, 503, 200]


async def test_every_request_is_recorded_in_order_and_shown_to_the_hook(
    provider: tuple[Fake, httpx.AsyncClient],
) -> None:
    made, http = provider
    seen: list[RecordedRequest] = []
    made.fake.faults.on_request = seen.append
    await http.get(made.other, params={"limit": "5"})
    await http.get(made.matching, headers={"authorization": "Bearer wrong"})
    assert seen == made.fake.requests
    assert [(r.method, r.path, r.status) for r in seen] == [
        ("GET", made.other, 200),
        ("GET", made.matching, 401),
    ]
    assert seen[0].query == {"limit": "5"}
    assert seen[0].at <= seen[1].at
