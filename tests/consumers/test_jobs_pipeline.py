"""End to end: a signed Square webhook → ingest → outbox → relay → Kafka → jobs consumer → row."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from typing import TYPE_CHECKING

import httpx
import pytest

from devkit.simulate import signed_square_delivery, square_event
from outbox.relay import Relay
from outbox.topics import ensure_topics, pipeline_topics
from schemas.topics import Topic
from tests.support.consumers import job, running_consumer
from tests.support.relay import relay_config
from tests.support.square import SIGNATURE_KEY, WEBHOOK_URL
from tests.support.waiting import eventually

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from tests.support.consumers import Conn

pytestmark = pytest.mark.broker


async def test_webhook_becomes_a_job_row(
    ingest_url: str, database_url: str, kafka_bootstrap: str, engine: AsyncEngine, db: Conn
) -> None:
    await ensure_topics(kafka_bootstrap, pipeline_topics(), partitions=4)
    relay = Relay(relay_config(database_url, kafka_bootstrap))
    relay_task = asyncio.create_task(relay.run())
    booking_id = f"bk{uuid.uuid4().hex[:12]}"
    customer_id = f"CU{uuid.uuid4().hex[:12]}".upper()
    topics = (Topic.SQUARE_BOOKINGS.value, Topic.SQUARE_CUSTOMERS.value)
    try:
        async with (
            running_consumer(engine, kafka_bootstrap, topics),
            httpx.AsyncClient(base_url=ingest_url, timeout=10) as client,
        ):

            async def deliver(event: dict[str, object]) -> httpx.Response:
                body, headers = signed_square_delivery(event, key=SIGNATURE_KEY, url=WEBHOOK_URL)
                return await client.post("/webhooks/square", content=body, headers=headers)

            booking = square_event("booking.created", entity_id=booking_id, customer_id=customer_id)
            response = await deliver(booking)
            acked = time.monotonic()
            assert response.status_code == 200
            await eventually(lambda: job(db, booking_id) is not None, within=15)
            latency = time.monotonic() - acked

            # Square retries the same delivery; staff meanwhile work the job.
            assert (await deliver(booking)).json()["duplicate"] is True
            db.execute("UPDATE jobs SET notes = 'ring twice' WHERE booking_id = %s", (booking_id,))
            customer = square_event("customer.updated", entity_id=customer_id, version=2)
            customer["data"]["object"]["customer"]["given_name"] = "Jo"
            assert (await deliver(customer)).status_code == 200
            await eventually(
                lambda: (job(db, booking_id) or {}).get("customer_name") == "Jo Earhart"
            )
    finally:
        relay.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(relay_task, 10)

    row = job(db, booking_id)
    assert row is not None
    assert (row["status"], row["customer_id"], row["notes"]) == (
        "ACCEPTED",
        customer_id,
        "ring twice",
    )
    assert latency < 5
