"""Write-back end to end on a real broker: API change → outbox → Kafka → write-back consumer →
fake Airtable → webhook ping → fetcher → leads projection, where our own change comes back as
an echo that neither bounces back out nor overwrites anything.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from api.app import create_api_app
from consumers.airtable_fetcher import AirtableFetcher
from consumers.leads import LeadsProjection
from devkit.fakes.airtable import FakeAirtable, add_leads_table
from ingest.app import create_app
from providers.airtable import AirtableClient, BaseRateLimiter
from sluice.db import create_engine
from sluice.settings import Settings
from tests.support.api import API_TOKEN, AUTH, key
from tests.support.pipeline import lead_row, ping, relay_and_writeback, running
from tests.support.rows import scalar
from tests.support.services import running_server
from tests.support.waiting import eventually

if TYPE_CHECKING:
    from tests.support.api import Conn

pytestmark = [pytest.mark.broker, pytest.mark.slow]


_CHANGED_EVENTS = "SELECT count(*) FROM inbound_events WHERE event_type = 'airtable.record.changed'"


def _airtable_stamps(db: Conn, record_id: str) -> int:
    return int(
        scalar(
            db,
            "SELECT count(*) FROM lead_sync_fields"
            " WHERE record_id = %s AND airtable_changed_at IS NOT NULL",
            record_id,
        )
    )


def _patches(fake: FakeAirtable, base_id: str) -> list[Any]:
    return [r for r in fake.requests_for(base_id) if r.method == "PATCH"]


async def test_own_write_comes_back_as_an_echo_and_stops_there(
    database_url: str, kafka_bootstrap: str, db: Conn
) -> None:
    fake = FakeAirtable(rate_limit_per_base=5)
    base = fake.add_base()
    add_leads_table(fake, base.id)
    hook = fake.add_webhook(base.id, None, {"options": {"filters": {"dataTypes": ["tableData"]}}})
    suffix = uuid.uuid4().hex[:10]
    settings = Settings(
        DATABASE_URL=database_url,
        AIRTABLE_WEBHOOK_SECRETS=f"{hook.id}={hook.mac_secret_base64}",
        SLUICE_API_TOKEN=API_TOKEN,
    )
    engine = create_engine(database_url, pool_size=4)
    async with running_server(fake.app) as airtable_url:
        client = AirtableClient(
            fake.token, endpoint_url=airtable_url, limiter=BaseRateLimiter(5, 0.3)
        )
        try:
            async with (
                relay_and_writeback(
                    client, engine, database_url, kafka_bootstrap, suffix
                ) as writeback,
                running_server(create_app(settings)) as ingest_url,
                running_server(create_api_app(settings)) as api_url,
                httpx.AsyncClient(base_url=ingest_url, timeout=20) as http,
                httpx.AsyncClient(base_url=api_url, headers=AUTH, timeout=20) as api,
                running(
                    AirtableFetcher(client, (f"airtable.pings.{suffix}",)), engine, kafka_bootstrap
                ),
                running(
                    LeadsProjection(
                        client, (f"airtable.records.{suffix}",), own_user_ids=[fake.user_id]
                    ),
                    engine,
                    kafka_bootstrap,
                ),
                running(writeback, engine, kafka_bootstrap),
            ):
                [rec] = fake.create_records(base.id, "Leads", [{"Full Name": "Ada Lovelace"}])
                await ping(fake, base.id, hook.id, http)
                await eventually(lambda: lead_row(db, rec) is not None)
                txn_before = (lead_row(db, rec) or {})["airtable_txn"]

                response = await api.patch(
                    f"/api/leads/{rec}",
                    json={"actor": "amy", "notes": "call Tuesday"},
                    headers={"X-Idempotency-Key": key()},
                )
                assert response.status_code == 200, response.text
                table = fake.bases[base.id].table("Leads")
                notes_field = table.field("Notes").id
                await eventually(
                    lambda: table.records[rec].cells.get(notes_field) == "call Tuesday"
                )
                await eventually(
                    lambda: (
                        scalar(db, "SELECT status FROM lead_sync WHERE record_id = %s", rec)
                        == "synced"
                    )
                )
                echo = hook.payloads[-1]
                assert echo["actionMetadata"]["source"] == "publicApi"
                assert echo["actionMetadata"]["sourceMetadata"]["user"]["id"] == fake.user_id

                # The echo arrives like any change: ping, fetch, project.
                await ping(fake, base.id, hook.id, http)
                await eventually(lambda: scalar(db, _CHANGED_EVENTS) == 1)
                await asyncio.sleep(1.0)  # time for a bounce, were there one
                assert len(_patches(fake, base.id)) == 1
                row = lead_row(db, rec)
                assert row is not None
                assert row["notes"] == "call Tuesday"
                assert row["airtable_txn"] == txn_before  # the echo wrote nothing
                assert _airtable_stamps(db, rec) == 0
                assert scalar(db, "SELECT status FROM lead_sync WHERE record_id = %s", rec) == (
                    "synced"
                )

                # A colleague's edit of the same field is not an echo: it is stamped.
                fake.update_records(base.id, "Leads", {rec: {"Notes": "call Wednesday"}})
                await ping(fake, base.id, hook.id, http)
                await eventually(lambda: _airtable_stamps(db, rec) == 1)
                # App-owned: never overwritten from Airtable.
                assert (lead_row(db, rec) or {})["notes"] == "call Tuesday"
        finally:
            await engine.dispose()
