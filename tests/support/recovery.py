"""Shared pieces of the recovery tests: outbox rows, and applying them as a consumer would."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import psycopg

from consumers.jobs import JobsProjection
from consumers.message import ConsumedMessage
from consumers.runtime import ConsumerConfig, ConsumerRuntime
from ingest.record import record_events
from ingest.square_events import square_new_event
from schemas.square import SquareEvent
from sluice.db import create_engine, transaction
from tests.support.services import libpq_url

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from consumers.message import Projection
    from consumers.runtime import BatchOutcome


async def store_events(
    engine: AsyncEngine,
    bodies: list[dict[str, Any]],
    received_at: datetime | None = None,
    ids: list[uuid.UUID] | None = None,
) -> list[uuid.UUID]:
    """Store Square events the way the webhook does (event row + outbox row, one transaction),
    received now or at `received_at`, with `ids` or random v4 ones; returns their sluice ids."""
    events = []
    for n, body in enumerate(bodies):
        text = json.dumps(body)
        events.append(
            square_new_event(
                SquareEvent.model_validate_json(text),
                text,
                event_id=ids[n] if ids else uuid.uuid4(),
                received_at=received_at or datetime.now(UTC),
                headers={"square-retry-number": "0"},
            )
        )
    async with transaction(engine) as conn:
        await record_events(conn, events)
    return [event.id for event in events]


def outbox_rows(db: psycopg.Connection[Any], topic: str | None = None) -> list[dict[str, Any]]:
    rows = db.execute(
        "SELECT id, topic, key, payload, headers FROM outbox "
        "WHERE %s::text IS NULL OR topic = %s ORDER BY id",
        (topic, topic),
    ).fetchall()
    return [
        {"id": r[0], "topic": r[1], "key": r[2], "payload": r[3], "headers": r[4]} for r in rows
    ]


def as_consumed(rows: list[dict[str, Any]]) -> list[ConsumedMessage]:
    """Outbox rows as the relay would publish them, one offset each."""
    return [
        ConsumedMessage(
            topic=row["topic"],
            partition=0,
            offset=n,
            key=row["key"].encode(),
            value=json.dumps(row["payload"]).encode(),
            headers=tuple((k, v.encode()) for k, v in row["headers"].items()),
        )
        for n, row in enumerate(rows)
    ]


async def apply_as(
    projection: Projection[Any], database_url: str, rows: list[dict[str, Any]]
) -> BatchOutcome:
    """Run a consumer's own batch path (decode, dedupe, apply) on these messages."""
    engine = create_engine(database_url, pool_size=1)
    try:
        runtime = ConsumerRuntime(
            projection, engine, ConsumerConfig(bootstrap_servers="unused", group_id="t")
        )
        return await runtime.apply_batch(as_consumed(rows))
    finally:
        await engine.dispose()


async def apply_as_jobs_consumer(database_url: str, rows: list[dict[str, Any]]) -> BatchOutcome:
    return await apply_as(JobsProjection(), database_url, rows)


def clear_outbox(database_url: str) -> None:
    """What a relay does once the broker acknowledged: the rows are gone."""
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        conn.execute("DELETE FROM outbox")
