"""Trace context from the webhook request, through the outbox row and Kafka, to the consumer's
database write (SLUICE_TRACING; spans kept in memory by the OpenTelemetry SDK)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from opentelemetry.trace import SpanKind

from consumers.jobs import JobsProjection
from consumers.runtime import ConsumerConfig, ConsumerRuntime
from consumers.tracing import TracedProjection
from devkit.simulate import signed_square_delivery, square_event
from ingest.app import create_app
from outbox.relay import Relay
from outbox.topics import ensure_topics, pipeline_topics
from sluice.db import create_engine
from sluice.settings import Settings
from sluice.tracing import Tracing
from tests.support.consumers import FAST_GROUP, job
from tests.support.relay import relay_config
from tests.support.services import running_server
from tests.support.square import SIGNATURE_KEY, WEBHOOK_URL
from tests.support.waiting import eventually

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from tests.support.consumers import Conn

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


def test_tracing_is_off_by_default(database_url: str) -> None:
    assert Tracing.from_settings(Settings(DATABASE_URL=database_url), "sluice-test") is None


async def test_ingest_continues_the_callers_trace_into_the_outbox_row(
    settings: Settings, db: Conn, spans: tuple[Tracing, InMemorySpanExporter]
) -> None:
    tracing, exporter = spans
    body, headers = signed_square_delivery(
        square_event("booking.created"), key=SIGNATURE_KEY, url=WEBHOOK_URL
    )
    async with (
        running_server(create_app(settings, tracing=tracing)) as url,
        httpx.AsyncClient(base_url=url) as http,
    ):
        traced = {**headers, "traceparent": f"00-{TRACE_ID}-{CALLER_SPAN}-01"}
        assert (await http.post("/webhooks/square", content=body, headers=traced)).is_success
        other = square_event("customer.created")
        body, headers = signed_square_delivery(other, key=SIGNATURE_KEY, url=WEBHOOK_URL)
        assert (await http.post("/webhooks/square", content=body, headers=headers)).is_success

    server = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER]
    assert len(server) == 2
    continued = next(s for s in server if s.parent is not None)
    assert continued.parent is not None
    assert f"{continued.context.trace_id:032x}" == TRACE_ID
    assert f"{continued.parent.span_id:016x}" == CALLER_SPAN
    started = next(s for s in server if s.parent is None)  # no traceparent: a new trace

    rows = db.execute("SELECT headers->>'traceparent' FROM outbox ORDER BY id").fetchall()
    expected = {(f"{s.context.trace_id:032x}", f"{s.context.span_id:016x}") for s in server}
    assert {tuple(row[0].split("-")[1:3]) for row in rows} == expected
    assert started.context.trace_id != continued.context.trace_id


@pytest.mark.broker
async def test_the_consumers_database_write_is_a_child_of_the_ingest_span(
    settings: Settings,
    database_url: str,
    kafka_bootstrap: str,
    db: Conn,
    spans: tuple[Tracing, InMemorySpanExporter],
) -> None:
    tracing, exporter = spans
    await ensure_topics(kafka_bootstrap, pipeline_topics(), partitions=4)
    booking_id = f"bk{uuid.uuid4().hex[:12]}"
    body, headers = signed_square_delivery(
        square_event("booking.created", entity_id=booking_id), key=SIGNATURE_KEY, url=WEBHOOK_URL
    )
    engine = create_engine(database_url, pool_size=2)
    group = f"test-{uuid.uuid4().hex}"
    config = ConsumerConfig(
        bootstrap_servers=kafka_bootstrap, group_id=group, poll_ms=50, **FAST_GROUP
    )
    runtime: ConsumerRuntime[Any] = ConsumerRuntime(
        TracedProjection(JobsProjection(), tracing, group), engine, config
    )
    relay = Relay(relay_config(database_url, kafka_bootstrap))
    tasks = [asyncio.create_task(relay.run()), asyncio.create_task(runtime.run())]
    try:
        async with (
            running_server(create_app(settings, tracing=tracing)) as url,
            httpx.AsyncClient(base_url=url) as http,
        ):
            traced = {**headers, "traceparent": f"00-{TRACE_ID}-{CALLER_SPAN}-01"}
            assert (await http.post("/webhooks/square", content=body, headers=traced)).is_success
            await eventually(lambda: job(db, booking_id) is not None, within=20)
    finally:
        relay.stop()
        runtime.stop()
        for task in tasks:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 10)
        await engine.dispose()

    finished = [
        s for s in exporter.get_finished_spans() if f"{s.context.trace_id:032x}" == TRACE_ID
    ]
    ingest = next(s for s in finished if s.kind is SpanKind.SERVER)
    consumer = [s for s in finished if s.kind is SpanKind.CONSUMER]
    assert consumer, "the consumer started no span in the request's trace"
    assert all(
        s.parent is not None and s.parent.span_id == ingest.context.span_id for s in consumer
    )
    assert consumer[0].attributes is not None
    assert consumer[0].attributes["messaging.destination.name"] == "square.bookings"
