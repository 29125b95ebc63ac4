"""The admin service: reconcile runs on demand, and every bad query parameter a 400."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import httpx
import pytest
import typer
from starlette.datastructures import QueryParams

from commands.contracts import openapi_document
from commands.recovery import parse_when
from devkit.fakes.square import FakeSquare
from recovery.admin import create_admin_app
from recovery.lock import run_lock
from recovery.reconcile_airtable import MAX_LOOKBACK_MINUTES, AirtableOptions
from sluice.db import create_engine
from sluice.query import MAX_INSTANT_LENGTH, ParameterError, Query
from sluice.settings import Settings
from tests.support.proxy import database_behind_proxy
from tests.support.services import running_server

if TYPE_CHECKING:
    from contextlib import AbstractAsyncContextManager

    from tests.support.api import Conn

TOKEN = "admin-token-for-tests"  # noqa: S105


def _admin(database_url: str, square_url: str, fake: FakeSquare, token: str | None) -> Settings:
    return Settings(
        DATABASE_URL=database_url,
        SQUARE_API_URL=square_url,
        SQUARE_ACCESS_TOKEN=fake.token,
        SLUICE_ADMIN_TOKEN=token,
    )


def serve(settings: Settings) -> AbstractAsyncContextManager[str]:
    return running_server(create_admin_app(settings))


async def test_admin_reconcile_answers_the_summary(database_url: str) -> None:
    fake = FakeSquare()
    fake.add_booking(datetime.now(UTC) + timedelta(hours=2))
    async with (
        running_server(fake.app) as square_url,
        serve(_admin(database_url, square_url, fake, TOKEN)) as url,
        httpx.AsyncClient(base_url=url) as client,
    ):
        endpoint = "/admin/reconcile/square"
        assert (await client.post(endpoint)).status_code == 401
        wrong = await client.post(endpoint, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        auth = {"Authorization": f"Bearer {TOKEN}"}
        assert (await client.post("/admin/reconcile/stripe", headers=auth)).status_code == 404
        both = await client.post(
            "/admin/reconcile/airtable?full=true&lookback_minutes=30", headers=auth
        )
        assert both.status_code == 400
        assert "not both" in both.json()["detail"]
        ok = await client.post(endpoint, headers=auth)
        assert ok.status_code == 200, ok.text
        assert ok.json()["created"] == 1
        assert ok.json()["errors"] == []

        engine = create_engine(database_url, pool_size=1)
        try:
            async with run_lock(engine, "reconcile:square"):
                locked = await client.post(endpoint, headers=auth)
        finally:
            await engine.dispose()
        assert locked.status_code == 409
        assert locked.json()["error"] == "locked"


async def test_admin_is_closed_without_a_token(database_url: str) -> None:
    fake = FakeSquare()
    async with (
        serve(_admin(database_url, "http://unused", fake, None)) as url,
        httpx.AsyncClient(base_url=url) as client,
    ):
        response = await client.post(
            "/admin/reconcile/square", headers={"Authorization": "Bearer anything"}
        )
    assert response.status_code == 503
    assert "SLUICE_ADMIN_TOKEN" in response.text
    assert fake.requests == []  # no run started: Square was never called


def _nothing_written(db: Conn) -> tuple[int, ...]:
    row = db.execute(
        "SELECT (SELECT count(*) FROM inbound_events), (SELECT count(*) FROM outbox),"
        " (SELECT count(*) FROM jobs), (SELECT count(*) FROM leads)"
    ).fetchone()
    assert row is not None
    return tuple(row)


NUL = "cannot contain the NUL character (\\u0000)"
LOOKBACK = "lookback_minutes: must be a whole number from 1 to 1440"


@pytest.mark.parametrize(
    ("query", "detail"),
    [
        ("from=2030-01-01T00:00:00Z%00", f"from: {NUL}"),
        ("to=%00", f"to: {NUL}"),
        ("lookback_minutes=1%00", f"lookback_minutes: {NUL}"),
        ("full=true%00", f"full: {NUL}"),
        ("lookback_minutes=99999999999999999999", LOOKBACK),
        ("lookback_minutes=" + "9" * 5000, LOOKBACK),
        ("lookback_minutes=1441", LOOKBACK),
        ("lookback_minutes=0", LOOKBACK),
        ("lookback_minutes=%D9%A3", LOOKBACK),
        ("lookback_minutes=", LOOKBACK),
        ("lookback_minutes=1&lookback_minutes=2", "lookback_minutes: give it once, not 2 times"),
        ("full=true&full=true", "full: give it once, not 2 times"),
        ("from=a&from=b", "from: give it once, not 2 times"),
        ("full=maybe", "full: must be true or false"),
        ("full=" + "t" * 5000, "full: must be true or false"),
        ("full=true&lookback_minutes=30", "give lookback_minutes or full, not both"),
        ("from=2030-13-01T00:00:00Z", "from: not an ISO 8601 date or date-time"),
        ("to=tomorrow", "to: not an ISO 8601 date or date-time"),
        ("from=2030-01-01T00:00:00", "from: a date-time needs a time zone"),
        ("from=0001-01-01T00:00:00%2B14:00", "from: outside the years 1 to 9999 in UTC"),
        ("to=9999-12-31T23:59:59-14:00", "to: outside the years 1 to 9999 in UTC"),
        ("from=" + "2" * 65, "from: must be at most 64 characters"),
        ("from=2030-01-02T00:00:00Z&to=2030-01-01T00:00:00Z", "from must be before to"),
        ("from=2999-01-01T00:00:00Z", "from must be before to"),  # after the default end
        ("ahead=true&from=2030-01-01T00:00:00Z", "give ahead or from/to, not both"),
        ("ahead=sometimes", "ahead: must be true or false"),
        ("since=last-week", "since: not an ISO 8601 date or date-time"),
        ("since=2030-01-01T08:00", "since: a date-time needs a time zone"),
    ],
)
@pytest.mark.parametrize("source", ["square", "airtable"])
async def test_bad_query_parameters_are_400_and_run_nothing(
    database_url: str, db: Conn, source: str, query: str, detail: str
) -> None:
    before = _nothing_written(db)
    async with (
        serve(_admin(database_url, "http://unused", FakeSquare(), TOKEN)) as url,
        httpx.AsyncClient(base_url=url) as client,
    ):
        response = await client.post(
            f"/admin/reconcile/{source}?{query}", headers={"Authorization": f"Bearer {TOKEN}"}
        )
    assert response.status_code == 400, response.text
    assert response.json() == {"error": "bad_request", "detail": detail}
    assert _nothing_written(db) == before


async def test_a_nul_in_the_source_is_404(database_url: str) -> None:
    async with (
        serve(_admin(database_url, "http://unused", FakeSquare(), TOKEN)) as url,
        httpx.AsyncClient(base_url=url) as client,
    ):
        response = await client.post(
            "/admin/reconcile/square%00", headers={"Authorization": f"Bearer {TOKEN}"}
        )
    assert response.status_code == 404
    assert response.json()["error"] == "unknown_source"


async def test_a_window_in_other_zones_is_taken_in_utc(database_url: str) -> None:
    fake = FakeSquare()
    fake.add_booking(datetime(2030, 1, 1, 12, tzinfo=UTC))
    async with (
        running_server(fake.app) as square_url,
        serve(_admin(database_url, square_url, fake, TOKEN)) as url,
        httpx.AsyncClient(base_url=url) as client,
    ):
        response = await client.post(
            "/admin/reconcile/square",
            params={"from": "2030-01-01T14:00:00+14:00", "to": "2030-01-02T00:00:00-01:00"},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
    assert response.status_code == 200, response.text
    assert response.json()["created"] == 1
    assert response.json()["window"] == {
        "from": "2030-01-01T00:00:00Z",
        "to": "2030-01-02T01:00:00Z",
    }


def test_the_document_gives_the_bounds_the_service_reads() -> None:
    operation = openapi_document()["paths"]["/admin/reconcile/{source}"]["post"]
    schemas = {p["name"]: p["schema"] for p in operation["parameters"] if p["in"] == "query"}
    assert schemas["lookback_minutes"]["maximum"] == MAX_LOOKBACK_MINUTES
    assert schemas["lookback_minutes"]["default"] == AirtableOptions().lookback_minutes
    assert schemas["from"]["maxLength"] == schemas["to"]["maxLength"] == MAX_INSTANT_LENGTH
    assert schemas["full"]["type"] == "boolean"


async def test_a_database_outage_is_503(database_url: str) -> None:
    fake = FakeSquare()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with (
        database_behind_proxy(database_url) as (via_proxy, proxy),
        running_server(fake.app) as square_url,
        serve(_admin(via_proxy, square_url, fake, TOKEN)) as url,
        httpx.AsyncClient(base_url=url) as client,
    ):
        await proxy.cut()
        answer = await client.post("/admin/reconcile/square", headers=auth)
        assert (answer.status_code, answer.json()["error"]) == (503, "unavailable")
        assert answer.headers["retry-after"] == "2"
        await proxy.restore()
        assert (await client.post("/admin/reconcile/square", headers=auth)).status_code == 200


@pytest.mark.parametrize(
    ("value", "end", "meant"),
    [
        ("2030-01-31", False, datetime(2030, 1, 31, tzinfo=UTC)),
        ("2030-01-31", True, datetime(2030, 2, 1, tzinfo=UTC)),  # the last day, whole
        ("2030-01-31T10:00:00+02:00", False, datetime(2030, 1, 31, 8, tzinfo=UTC)),
        ("2030-01-31T10:00:00+02:00", True, datetime(2030, 1, 31, 8, tzinfo=UTC)),
    ],
)
def test_the_cli_and_the_admin_trigger_read_a_time_the_same_way(
    value: str, *, end: bool, meant: datetime
) -> None:
    assert parse_when(value, end=end) == meant
    name = "to" if end else "from"
    assert Query(QueryParams({name: value})).instant(name, dates=True, end=end) == meant


def test_a_time_without_a_zone_is_refused_alike() -> None:
    with pytest.raises(typer.BadParameter, match="a date-time needs a time zone"):
        parse_when("2030-01-31T10:00:00")
    with pytest.raises(ParameterError, match="a date-time needs a time zone"):
        Query(QueryParams({"from": "2030-01-31T10:00:00"})).instant("from", dates=True)
