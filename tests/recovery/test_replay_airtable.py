"""`sluice replay store --source airtable`: fetched record changes go back into the outbox
exactly as the fetcher built them (same id, key, payload and headers); pings are skipped."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import psycopg

from ingest.airtable_fetch import change_event
from ingest.record import record_events
from recovery.replay_store import StoreFilter, replay_store
from schemas.airtable import RecordChange
from sluice.db import create_engine, transaction

Conn = psycopg.Connection[tuple[Any, ...]]


def outbox(db: Conn) -> list[tuple[Any, ...]]:
    return db.execute(
        "SELECT event_id, topic, key, payload, headers FROM outbox ORDER BY id"
    ).fetchall()


async def test_replay_rebuilds_record_changes_and_skips_pings(database_url: str, db: Conn) -> None:
    change = RecordChange(
        base_id="appREPLAY0000001",
        table_id="tblREPLAY0000001",
        record_id="recREPLAY0000001",
        action="changed",
        webhook_id="achREPLAY0000001",
        payload_cursor=7,
        base_transaction_number=42,
        timestamp=datetime.now(UTC),
        cells={"fldName": "Ada"},
    )
    engine = create_engine(database_url, pool_size=1)
    try:
        async with transaction(engine) as conn:
            await record_events(conn, [change_event(change)])
        original = outbox(db)
        db.execute("DELETE FROM outbox")
        db.execute(
            "INSERT INTO inbound_events (id, source, provider_event_id, event_type, entity_type,"
            " entity_id, occurred_at, received_at, body, headers) VALUES (gen_random_uuid(),"
            " 'airtable', 'ping-1', 'airtable.webhook.ping', 'webhook', 'achREPLAY0000001',"
            " now(), now(), '{}', '{}')"
        )

        result = await replay_store(engine, StoreFilter("airtable"))
    finally:
        await engine.dispose()

    assert (result.matched, result.enqueued, result.errors) == (2, 1, [])
    assert outbox(db) == original
    assert original[0][1:3] == ("airtable.records", change.key)
