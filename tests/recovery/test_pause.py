"""`sluice pause` / `sluice resume`: a paused consumer applies nothing and a paused relay
publishes nothing, on every replica within seconds; a resume drains what waited."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

import pytest
from typer.testing import CliRunner

from commands.main import app
from devkit.simulate import square_event
from outbox.enqueue import OutboxMessage
from recovery.pause import UnknownComponentError, pause, paused_components, resume
from tests.support.consumers import consumed, fresh_topics, produce, running_consumer
from tests.support.relay import (
    consume,
    fresh_topic,
    outbox_count,
    relay_config,
    running_relay,
    write_rows,
)
from tests.support.rows import scalar
from tests.support.waiting import eventually

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from tests.support.consumers import Conn

pytestmark = pytest.mark.broker
CHECK = 0.2  # how often the components read the flag in these tests


async def test_a_paused_consumer_applies_nothing_until_resumed(
    engine: AsyncEngine, kafka_bootstrap: str, db: Conn
) -> None:
    topics = fresh_topics()

    def jobs() -> int:
        return int(scalar(db, "SELECT count(*) FROM jobs"))

    async with running_consumer(engine, kafka_bootstrap, topics, pause_check_seconds=CHECK) as one:
        first = [square_event("booking.created", entity_id=f"bk{n}", version=1) for n in range(3)]
        await produce(kafka_bootstrap, [consumed(e, topics) for e in first])
        await eventually(lambda: jobs() == 3, 20, "the first bookings")

        change = await pause(engine, "consumer:jobs", actor="test", reason="maintenance")
        assert change.as_json() == {"component": "consumer:jobs", "paused": True, "changed": True}
        assert (await pause(engine, "consumer:jobs", actor="test")).changed is False
        await eventually(lambda: one.pause.paused, 5, "the consumer to see it")

        later = [
            square_event("booking.created", entity_id=f"bk{n}", version=1) for n in range(3, 8)
        ]
        await produce(kafka_bootstrap, [consumed(e, topics) for e in later])
        await asyncio.sleep(2)
        assert jobs() == 3  # held: the messages wait on Kafka
        listed = await paused_components(engine)
        assert [(p["component"], p["paused_by"], p["reason"]) for p in listed] == [
            ("consumer:jobs", "test", "maintenance")
        ]

        assert (await resume(engine, "consumer:jobs", actor="test")).changed is True
        await eventually(lambda: jobs() == 8, 20, "the held bookings to drain")
        assert (await resume(engine, "consumer:jobs", actor="test")).changed is False

    audit = db.execute("SELECT actor, action, target FROM audit_log ORDER BY id").fetchall()
    assert audit == [("test", "pause", "consumer:jobs"), ("test", "resume", "consumer:jobs")]


async def test_a_paused_relay_publishes_nothing_until_resumed(
    engine: AsyncEngine, database_url: str, kafka_bootstrap: str
) -> None:
    topic = await fresh_topic(kafka_bootstrap)

    def rows(start: int) -> list[OutboxMessage]:
        return [OutboxMessage.of(topic, f"k{n}", {"n": n}) for n in range(start, start + 4)]

    config = relay_config(database_url, kafka_bootstrap, pause_check_seconds=CHECK)
    async with running_relay(config) as relay:
        await write_rows(database_url, rows(0))
        await eventually(lambda: outbox_count(database_url) == 0, 10, "the first rows")
        await pause(engine, "relay", actor="test")
        await eventually(lambda: relay.pause.paused, 5, "the relay to see the pause")
        assert (
            relay.metrics.registry.get_sample_value(
                "sluice_component_paused", {"component": "relay"}
            )
            == 1
        )

        await write_rows(database_url, rows(4))
        await asyncio.sleep(1.5)
        assert outbox_count(database_url) == 4  # stored, not published

        await resume(engine, "relay", actor="test")
        records = await consume(kafka_bootstrap, topic, until=lambda r: len(r) >= 8)
    values: list[Any] = sorted(json.loads(r.value or b"null")["n"] for r in records)
    assert values == list(range(8))


async def test_only_known_components_can_be_paused(engine: AsyncEngine, database_url: str) -> None:
    with pytest.raises(UnknownComponentError, match="consumer:jobs"):
        await pause(engine, "consumer:nobody", actor="test")
    result = await asyncio.to_thread(
        CliRunner().invoke, app, ["pause", "ingest"], env={"DATABASE_URL": database_url}
    )
    assert result.exit_code == 2
    assert "no component 'ingest'" in result.output
    assert await paused_components(engine) == []
