"""`sluice dev` restarted: its fresh fake Airtable knows none of the last run's webhooks, so the
registry must not keep them (they would fail every refresh and reconcile run)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from devkit.dev_airtable import DEV_BASE_ID, FAKE_TOKEN, _register
from devkit.fakes.airtable import FakeAirtable, add_leads_table
from ingest.airtable_webhooks import refresh_all, registered
from providers.airtable import AirtableClient, BaseRateLimiter
from tests.support.services import running_server

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine


def dev_fake() -> FakeAirtable:
    fake = FakeAirtable()
    fake.add_base("Sales (fake)", DEV_BASE_ID)
    add_leads_table(fake, DEV_BASE_ID)
    return fake


async def test_a_restart_leaves_only_the_new_webhook_registered(
    database_url: str, engine: AsyncEngine
) -> None:
    async with running_server(dev_fake().app) as first_url:
        first, _ = await _register(database_url, first_url, "http://127.0.0.1:1/webhooks/airtable")
    async with running_server(dev_fake().app) as second_url:
        second, _ = await _register(
            database_url, second_url, "http://127.0.0.1:1/webhooks/airtable"
        )
        assert [r.webhook_id for r in await registered(engine)] == [second]
        client = AirtableClient(FAKE_TOKEN, endpoint_url=second_url, limiter=BaseRateLimiter(5, 1))
        outcomes = await refresh_all(engine, client)
    assert first != second
    assert [(o.webhook_id, o.error) for o in outcomes] == [(second, None)]
