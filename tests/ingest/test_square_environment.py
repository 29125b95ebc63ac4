"""A deployment takes one Square environment: a validly signed delivery from the other one is
refused with 422 and nothing of it stored, so sandbox events never reach production tables."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from devkit.simulate import signed_square_delivery, square_event
from ingest.app import create_app
from sluice.settings import Settings
from tests.support.services import running_server
from tests.support.square import SIGNATURE_KEY, WEBHOOK_URL

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from schemas.square_environment import SquareEnvironment

Conn = psycopg.Connection[tuple[Any, ...]]
OTHER: dict[SquareEnvironment, SquareEnvironment] = {
    "production": "sandbox",
    "sandbox": "production",
}


def deployment(database_url: str, environment: SquareEnvironment) -> Settings:
    return Settings(
        DATABASE_URL=database_url,
        SQUARE_ENVIRONMENT=environment,
        SQUARE_WEBHOOK_SIGNATURE_KEYS=SIGNATURE_KEY,
        SQUARE_WEBHOOK_URL=WEBHOOK_URL,
    )


@pytest.fixture(params=["production", "sandbox"])
def environment(request: pytest.FixtureRequest) -> SquareEnvironment:
    value: SquareEnvironment = request.param
    return value


@pytest.fixture
async def http(
    database_url: str, environment: SquareEnvironment
) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        running_server(create_app(deployment(database_url, environment))) as url,
        httpx.AsyncClient(base_url=url, timeout=20) as client,
    ):
        yield client


def stored(db: Conn) -> tuple[int, int, int]:
    row = db.execute(
        "SELECT (SELECT count(*) FROM inbound_events), (SELECT count(*) FROM outbox),"
        " (SELECT count(*) FROM delivery_repeats)"
    ).fetchone()
    assert row is not None
    return row[0], row[1], row[2]


async def post(http: httpx.AsyncClient, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return await http.post("/webhooks/square", content=body, headers=headers)


def rejected(metrics: str, reason: str) -> float:
    for family in text_string_to_metric_families(metrics):
        for sample in family.samples:
            if sample.name == "sluice_webhooks_rejected_total" and sample.labels == {
                "source": "square",
                "reason": reason,
            }:
                return sample.value
    return 0.0


async def test_the_other_environments_signed_delivery_is_422_and_nothing_is_stored(
    http: httpx.AsyncClient, db: Conn, environment: SquareEnvironment
) -> None:
    other = OTHER[environment]
    body, headers = signed_square_delivery(
        square_event("booking.created"), key=SIGNATURE_KEY, url=WEBHOOK_URL, environment=other
    )
    response = await post(http, body, headers)
    assert response.status_code == 422
    answer = response.json()
    assert answer["error"] == "wrong_environment"
    assert headers["square-environment"] in answer["detail"]
    assert f"SQUARE_ENVIRONMENT={environment}" in answer["detail"]
    assert stored(db) == (0, 0, 0)
    assert rejected((await http.get("/metrics")).text, "wrong_environment") == 1


async def test_its_own_environments_delivery_and_one_without_the_header_are_stored(
    http: httpx.AsyncClient, db: Conn, environment: SquareEnvironment
) -> None:
    body, headers = signed_square_delivery(
        square_event("booking.created"), key=SIGNATURE_KEY, url=WEBHOOK_URL, environment=environment
    )
    own = await post(http, body, headers)
    assert own.status_code == 200
    kept = db.execute("SELECT headers FROM inbound_events").fetchone()
    assert kept is not None
    assert kept[0]["square-environment"] == headers["square-environment"]

    body, headers = signed_square_delivery(
        square_event("customer.updated"), key=SIGNATURE_KEY, url=WEBHOOK_URL
    )
    del headers["square-environment"]
    assert (await post(http, body, headers)).status_code == 200
    assert stored(db) == (2, 2, 0)


@pytest.mark.parametrize("spelling", [str.lower, str.upper, str.swapcase])
async def test_the_header_is_read_whatever_its_case(
    http: httpx.AsyncClient, db: Conn, environment: SquareEnvironment, spelling: Any
) -> None:
    def delivery(env: SquareEnvironment) -> tuple[bytes, dict[str, str]]:
        body, headers = signed_square_delivery(
            square_event("booking.created"), key=SIGNATURE_KEY, url=WEBHOOK_URL, environment=env
        )
        headers["square-environment"] = spelling(headers["square-environment"])
        return body, headers

    assert (await post(http, *delivery(environment))).status_code == 200
    assert (await post(http, *delivery(OTHER[environment]))).status_code == 422
    assert stored(db)[:2] == (1, 1)


async def test_an_environment_square_does_not_have_is_refused(
    http: httpx.AsyncClient, db: Conn
) -> None:
    body, headers = signed_square_delivery(
        square_event("booking.created"), key=SIGNATURE_KEY, url=WEBHOOK_URL
    )
    response = await post(http, body, {**headers, "square-environment": "Staging"})
    assert (response.status_code, response.json()["error"]) == (422, "wrong_environment")
    assert "'Staging'" in response.json()["detail"]
    assert stored(db) == (0, 0, 0)


async def test_the_signature_is_checked_first(
    http: httpx.AsyncClient, db: Conn, environment: SquareEnvironment
) -> None:
    """An unverified request learns nothing of the configuration: a bad signature is a 401
    whichever environment it names."""
    other = OTHER[environment]
    body, headers = signed_square_delivery(
        square_event("booking.created"), key="not-the-key", url=WEBHOOK_URL, environment=other
    )
    response = await post(http, body, headers)
    assert (response.status_code, response.json()["error"]) == (401, "bad_signature")
    del headers["x-square-hmacsha256-signature"]
    response = await post(http, body, headers)
    assert (response.status_code, response.json()["error"]) == (401, "missing_signature")
    assert stored(db) == (0, 0, 0)


async def test_the_environment_is_checked_before_the_envelope(
    http: httpx.AsyncClient, db: Conn, environment: SquareEnvironment
) -> None:
    event = square_event("booking.created")
    del event["event_id"]
    body, headers = signed_square_delivery(
        event, key=SIGNATURE_KEY, url=WEBHOOK_URL, environment=OTHER[environment]
    )
    assert (await post(http, body, headers)).status_code == 422
    assert stored(db) == (0, 0, 0)


async def test_a_repeat_from_the_other_environment_records_no_repeat(
    http: httpx.AsyncClient, db: Conn, environment: SquareEnvironment
) -> None:
    event = square_event("booking.created")
    body, headers = signed_square_delivery(
        event, key=SIGNATURE_KEY, url=WEBHOOK_URL, environment=environment
    )
    assert (await post(http, body, headers)).json()["duplicate"] is False
    _, from_other = signed_square_delivery(
        event, key=SIGNATURE_KEY, url=WEBHOOK_URL, environment=OTHER[environment]
    )
    assert (await post(http, body, from_other)).status_code == 422
    assert stored(db) == (1, 1, 0)


async def test_refusals_are_tallied_for_the_console(database_url: str, db: Conn) -> None:
    body, headers = signed_square_delivery(
        square_event("booking.created"), key=SIGNATURE_KEY, url=WEBHOOK_URL, environment="sandbox"
    )
    settings = deployment(database_url, "production")
    async with running_server(create_app(settings)) as url, httpx.AsyncClient(base_url=url) as c:
        for _ in range(2):
            assert (await post(c, body, headers)).status_code == 422
    # Written every few seconds, and when the app stops.
    rows = db.execute(
        "SELECT source, reason, sum(count) FROM webhook_answers GROUP BY 1, 2"
    ).fetchall()
    assert rows == [("square", "wrong_environment", 2)]
