"""The Airtable pipeline as the end-to-end tests run it: the outbox relayed to Kafka under
per-test topic names, consumers running in this event loop, signed pings, and rows read back."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import TYPE_CHECKING, Any

import psycopg
from aiokafka import AIOKafkaProducer

from consumers.airtable_writeback import AirtableWriteback
from consumers.runtime import ConsumerConfig, ConsumerRuntime
from consumers.writeback_pusher import PusherConfig
from devkit.simulate_airtable import airtable_ping, signed_airtable_ping
from providers.airtable import breaker_counts
from sluice.resilience import CircuitBreaker
from tests.support.rows import one_row
from tests.support.services import libpq_url

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import httpx
    from sqlalchemy.ext.asyncio import AsyncEngine

    from consumers.message import Projection
    from devkit.fakes.airtable import FakeAirtable
    from providers.airtable import AirtableClient

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
    projection: Projection[Any],
    engine: AsyncEngine,
    bootstrap: str,
    config: ConsumerConfig | None = None,
) -> AsyncIterator[None]:
    """The consumer running in this event loop until the block ends; by default in a group of
    its own, with short timeouts."""
    config = config or ConsumerConfig(
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


async def ping(fake: FakeAirtable, base_id: str, hook_id: str, http: httpx.AsyncClient) -> None:
    secret = fake.bases[base_id].webhooks[hook_id].mac_secret_base64
    body, headers = signed_airtable_ping(airtable_ping(base_id, hook_id), secret)
    response = await http.post("/webhooks/airtable", content=body, headers=headers)
    assert response.status_code == 200, response.text


def lead_row(db: Conn, record_id: str) -> dict[str, Any] | None:
    return one_row(db, "SELECT * FROM leads WHERE record_id = %s", record_id)


@contextlib.asynccontextmanager
async def relay_and_writeback(
    client: AirtableClient,
    engine: AsyncEngine,
    database_url: str,
    kafka_bootstrap: str,
    suffix: str,
) -> AsyncIterator[AirtableWriteback]:
    """The outbox relayed to Kafka (topics renamed with `suffix`), and the write-back's pusher
    running; the write-back consumer itself is the caller's to run."""
    writeback = AirtableWriteback(
        client,
        CircuitBreaker("airtable", counts=breaker_counts),
        database_url=database_url,
        topics=(f"app.changes.{suffix}",),
        config=PusherConfig(poll_seconds=0.2),
    )
    stopping = asyncio.Event()
    relay = asyncio.create_task(relay_outbox(database_url, kafka_bootstrap, suffix))
    pusher = asyncio.create_task(writeback.run_alongside(engine, stopping))
    try:
        yield writeback
    finally:
        stopping.set()
        for task in (relay, pusher):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
