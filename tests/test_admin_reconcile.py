from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import httpx

from recovery.admin import create_admin_app
from recovery.lock import run_lock
from sluice.db import create_engine
from sluice.fakes.square import FakeSquare
from sluice.settings import Settings
from tests.services import running_server

if TYPE_CHECKING:
    from contextlib import AbstractAsyncContextManager

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
