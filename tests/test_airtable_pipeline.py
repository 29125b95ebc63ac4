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
from aiokafka import AIOKafkaProducer

from consumers.airtable_fetcher import AirtableFetcher
from consumers.leads import LeadsProjection
from consumers.runtime import ConsumerConfig, ConsumerRuntime
from ingest.airtable_api import AirtableClient, BaseRateLimiter
from ingest.app import create_app
from sluice.db import create_engine
from sluice.fakes.airtable import FakeAirtable, add_leads_table
from sluice.settings import Settings
from sluice.simulate_airtable import airtable_ping, signed_airtable_ping
from tests.services import libpq_url, running_server

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from sqlalchemy.ext.asyncio import AsyncEngine

    from consumers.message import Projection


pytestmark = [pytest.mark.broker, pytest.mark.slow]

Conn = psycopg.Connection[tuple[Any, ...]]


async def relay_outbox(database_url: str, bootstrap: str, suffix: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=2)
    await producer.start()
    try:
        async with await psycopg.AsyncConnection.connect(
            libpq_url(database_url), autocommit=True
        ) as conn:
            while True:
                rows = await (
                    await conn.execute(
                        "SELECT id, topic, key, payload::text, headers FROM outbox ORDER BY id"
                    )
                ).fetchall()
                for _, topic, key, payload, headers in rows:
                    await producer.send_and_wait(
                        f"{topic}.{suffix}",
                        value=payload.encode(),
                        key=key.encode(),
                        headers=[(k, v.encode()) for k, v in headers.items()],
                    )
                if rows:
                    await conn.execute("DELETE FROM outbox WHERE id <= %s", (rows[-1][0],))
                await asyncio.sleep(0.05)
    finally:
        await producer.stop()


@contextlib.asynccontextmanager
async def running(
    projection: Projection[Any], engine: AsyncEngine, bootstrap: str
) -> AsyncIterator[None]:
    config = ConsumerConfig(
        bootstrap_servers=bootstrap,
        group_id=f"test-{uuid.uuid4().hex}",
        poll_ms=50,
        session_timeout_ms=1000,
        rebalance_timeout_ms=1000,
        drain_timeout_seconds=2.0,
    )
    runtime = ConsumerRuntime(projection, engine, config)
    task = asyncio.create_task(runtime.run())
    try:
        assigned = asyncio.ensure_future(runtime.assigned.wait())
        await asyncio.wait({assigned, task}, timeout=20, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()
        yield
    finally:
        runtime.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 10)


async def eventually(check: Callable[[], bool], within: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


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


async def ping(fake: FakeAirtable, base_id: str, hook_id: str, http: httpx.AsyncClient) -> None:
    secret = fake.bases[base_id].webhooks[hook_id].mac_secret_base64
    body, headers = signed_airtable_ping(airtable_ping(base_id, hook_id), secret)
    response = await http.post("/webhooks/airtable", content=body, headers=headers)
    assert response.status_code == 200, response.text


def lead_row(db: Conn, record_id: str) -> dict[str, Any] | None:
    cursor = db.execute("SELECT * FROM leads WHERE record_id = %s", (record_id,))
    row = cursor.fetchone()
    if row is None:
        return None
    assert cursor.description is not None
    return {d.name: v for d, v in zip(cursor.description, row, strict=True)}


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
