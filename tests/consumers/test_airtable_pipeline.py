"""Airtable end to end: signed ping → ingest → Kafka → fetcher → Kafka → leads, on a real broker.

The outbox is moved to Kafka by a small relay of the test's own that renames each topic with a
per-test suffix, so runs never read each other's messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import TYPE_CHECKING, Any

import httpx
import psycopg
import pytest

from consumers.airtable_fetcher import AirtableFetcher
from consumers.leads import LeadsProjection
from devkit.fakes.airtable import FakeAirtable, add_leads_table
from ingest.app import create_app
from providers.airtable import AirtableClient, BaseRateLimiter
from sluice.db import create_engine
from sluice.settings import Settings
from tests.support.pipeline import lead_row, ping, relay_outbox, running
from tests.support.services import running_server
from tests.support.waiting import eventually

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


pytestmark = [pytest.mark.broker, pytest.mark.slow]

Conn = psycopg.Connection[tuple[Any, ...]]


@pytest.fixture
async def pipeline(
    database_url: str, kafka_bootstrap: str
) -> AsyncIterator[tuple[FakeAirtable, str, str, httpx.AsyncClient]]:
    fake = FakeAirtable(rate_limit_per_base=5)
    base = fake.add_base()
    add_leads_table(fake, base.id)
    hook = fake.add_webhook(base.id, None, {"options": {"filters": {"dataTypes": ["tableData"]}}})
    suffix = uuid.uuid4().hex[:10]
    settings = Settings(
        DATABASE_URL=database_url,
        AIRTABLE_WEBHOOK_SECRETS=f"{hook.id}={hook.mac_secret_base64}",
    )
    engine = create_engine(database_url, pool_size=4, application_name="airtable-pipeline-test")
    async with running_server(fake.app) as api_url:
        client = AirtableClient(fake.token, endpoint_url=api_url, limiter=BaseRateLimiter(5, 0.3))
        relay = asyncio.create_task(relay_outbox(database_url, kafka_bootstrap, suffix))
        try:
            async with (
                running_server(create_app(settings)) as ingest_url,
                httpx.AsyncClient(base_url=ingest_url, timeout=20) as http,
                running(
                    AirtableFetcher(client, (f"airtable.pings.{suffix}",)), engine, kafka_bootstrap
                ),
                running(
                    LeadsProjection(client, (f"airtable.records.{suffix}",)),
                    engine,
                    kafka_bootstrap,
                ),
            ):
                yield fake, base.id, hook.id, http
        finally:
            relay.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await relay
            await engine.dispose()


async def test_changes_flow_from_ping_to_leads(
    pipeline: tuple[FakeAirtable, str, str, httpx.AsyncClient], db: Conn
) -> None:
    fake, base_id, hook_id, http = pipeline
    [rec] = fake.create_records(
        base_id,
        "Leads",
        [{"Full Name": "Ada Lovelace", "Email": "ada@example.com", "Lead Status": "New"}],
    )
    await ping(fake, base_id, hook_id, http)
    await eventually(lambda: lead_row(db, rec) is not None, within=30)
    row = lead_row(db, rec)
    assert row is not None
    assert (row["full_name"], row["email"], row["lead_status"]) == (
        "Ada Lovelace",
        "ada@example.com",
        "New",
    )
    db.execute("UPDATE leads SET claimed_by = 'sam', notes = 'hot' WHERE record_id = %s", (rec,))

    fake.update_records(base_id, "Leads", {rec: {"Lead Status": "Qualified", "Notes": "x"}})
    # Pings may be coalesced or repeated: two pings, one change.
    await ping(fake, base_id, hook_id, http)
    await ping(fake, base_id, hook_id, http)
    await eventually(lambda: (lead_row(db, rec) or {}).get("lead_status") == "Qualified", 30)

    fake.destroy_records(base_id, "Leads", [rec])
    await ping(fake, base_id, hook_id, http)
    await eventually(lambda: (lead_row(db, rec) or {}).get("deleted_at") is not None, 30)

    row = lead_row(db, rec)
    assert row is not None
    assert (row["claimed_by"], row["notes"], row["email"]) == ("sam", "hot", "ada@example.com")
    assert row["airtable_txn"] == 3
    stored = db.execute(
        "SELECT event_type, count(*) FROM inbound_events"
        " WHERE event_type LIKE 'airtable.record.%' GROUP BY 1"
    ).fetchall()
    assert dict(stored) == {
        "airtable.record.changed": 1,
        "airtable.record.created": 1,
        "airtable.record.destroyed": 1,
    }
