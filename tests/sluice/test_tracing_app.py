"""Traces beyond ingest (SLUICE_TRACING; spans kept in memory by the OpenTelemetry SDK): an App
API change, through its outbox row, to the write-back's push to Airtable; and an Airtable ping,
through the fetch, to the records events the leads consumer applies."""

from __future__ import annotations

from typing import TYPE_CHECKING

from opentelemetry.trace import SpanKind

from api.app import create_api_app
from consumers.airtable_fetcher import AirtableFetcher
from consumers.message import ConsumedMessage
from consumers.writeback_pusher import WritebackPusher
from providers.airtable import breaker_counts
from sluice.db import transaction
from sluice.resilience import CircuitBreaker
from sluice.settings import Settings
from tests.support.airtable import register
from tests.support.api import API_TOKEN, insert_lead, key
from tests.support.services import running_server

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from sqlalchemy.ext.asyncio import AsyncEngine

    from sluice.tracing import Tracing
    from tests.support.airtable import Airtable, Conn

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


def trace_of(traceparent: str | None) -> str | None:
    return None if traceparent is None else traceparent.split("-")[1]


async def test_an_api_change_is_one_trace_from_the_request_to_the_airtable_push(
    database_url: str,
    engine: AsyncEngine,
    airtable: Airtable,
    db: Conn,
    spans: tuple[Tracing, InMemorySpanExporter],
) -> None:
    import httpx  # noqa: PLC0415 - the client of this test only

    tracing, exporter = spans
    [record_id] = airtable.fake.create_records(airtable.base.id, "Leads", [{"Full Name": "Ada"}])
    insert_lead(db, record_id, airtable.base.id, airtable.table.id)
    settings = Settings(DATABASE_URL=database_url, SLUICE_API_TOKEN=API_TOKEN)
    headers = {
        "Authorization": f"Bearer {API_TOKEN}",
        "X-Idempotency-Key": key(),
        "traceparent": CALLER,
    }
    async with (
        running_server(create_api_app(settings, tracing=tracing)) as url,
        httpx.AsyncClient(base_url=url) as http,
    ):
        answer = await http.patch(
            f"/api/leads/{record_id}", json={"actor": "amy", "notes": "gate 4"}, headers=headers
        )
    assert answer.status_code == 200, answer.text
    [server] = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER]
    assert server.name == "PATCH /api/leads/{id}"
    assert f"{server.context.trace_id:032x}" == TRACE_ID
    # The change's outbox row and the lead's pending push both carry the request's trace.
    [row] = db.execute("SELECT headers->>'traceparent' FROM outbox").fetchall()
    assert trace_of(row[0]) == TRACE_ID
    kept = db.execute("SELECT traceparent FROM lead_sync WHERE record_id = %s", (record_id,))
    assert trace_of(kept.fetchall()[0][0]) == TRACE_ID

    pusher = WritebackPusher(
        engine,
        airtable.client(),
        CircuitBreaker("airtable", counts=breaker_counts),
        tracing=tracing,
    )
    summary = await pusher.push_once()
    assert summary.synced == 1
    [push] = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.CLIENT]
    assert push.name == "PATCH airtable records"
    assert f"{push.context.trace_id:032x}" == TRACE_ID
    assert push.parent is not None
    assert push.parent.span_id == server.context.span_id
    notes = airtable.table.field("Notes").id
    assert airtable.table.records[record_id].cells.get(notes) == "gate 4"
    # Synced: the trace is done with.
    done = db.execute("SELECT traceparent FROM lead_sync WHERE record_id = %s", (record_id,))
    assert done.fetchall() == [(None,)]


async def test_a_pings_fetch_writes_records_events_in_the_pings_trace(
    engine: AsyncEngine, airtable: Airtable, db: Conn
) -> None:
    await register(engine, airtable)
    airtable.fake.create_records(airtable.base.id, "Leads", [{"Full Name": "Bob"}])
    fetcher = AirtableFetcher(airtable.client())
    ping = ConsumedMessage(
        topic="airtable.pings",
        partition=0,
        offset=0,
        key=airtable.webhook.id.encode(),
        value=(
            '{"specversion":"1.0","id":"e1","source":"airtable","type":"airtable.ping",'
            f'"subject":"{airtable.webhook.id}","time":"2026-01-01T00:00:00Z",'
            '"providereventid":"p1","receivedat":"2026-01-01T00:00:00Z","entitytype":"webhook",'
            f'"data":{{"base":{{"id":"{airtable.base.id}"}},"webhook":{{"id":"{airtable.webhook.id}"}},'
            '"timestamp":"2026-01-01T00:00:00Z"}}'
        ).encode(),
        headers=(("traceparent", CALLER.encode()),),
    )
    decoded = fetcher.decode(ping)
    assert decoded is not None
    assert decoded.value.traceparent == CALLER
    async with transaction(engine) as conn:
        await fetcher.apply(conn, [decoded.value])
    rows = db.execute(
        "SELECT headers->>'traceparent' FROM outbox WHERE topic = 'airtable.records'"
    ).fetchall()
    assert rows
    assert {trace_of(r[0]) for r in rows} == {TRACE_ID}
