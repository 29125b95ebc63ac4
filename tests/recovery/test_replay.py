from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import OffsetAndMetadata

from devkit.simulate import square_event
from recovery.audit import read_audit
from recovery.dead_letters import discard, list_dead_letters, redrive
from recovery.replay_kafka import GroupActiveError, Shift, ToDatetime, ToEarliest, reset_offsets
from recovery.replay_store import NoRebuilderError, StoreFilter, replay_store
from tests.support.recovery import (
    apply_as_jobs_consumer,
    clear_outbox,
    outbox_rows,
    store_events,
)

if TYPE_CHECKING:
    import psycopg
    from sqlalchemy.ext.asyncio import AsyncEngine


async def test_replay_store_restores_the_projection_without_double_effect(
    engine: AsyncEngine, database_url: str, db: psycopg.Connection[Any]
) -> None:
    bodies = [square_event("booking.created", entity_id=f"bk{n}", version=1) for n in range(3)]
    bodies.append(square_event("booking.updated", entity_id="bk0", version=2))
    await store_events(engine, bodies)
    original = outbox_rows(db)
    await apply_as_jobs_consumer(database_url, original)
    clear_outbox(database_url)  # published, then the broker lost the messages

    result = await replay_store(engine, StoreFilter("square"))
    assert result.as_json() == {"matched": 4, "enqueued": 4, "errors": []}
    replayed = outbox_rows(db)

    def strip(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: r[k] for k in ("topic", "key", "payload", "headers")} for r in rows]

    assert strip(replayed) == strip(original)  # the same envelope, the same ce_id

    # A consumer that applied them already drops every one; the jobs are as they were.
    before = db.execute("SELECT * FROM jobs ORDER BY booking_id").fetchall()
    outcome = await apply_as_jobs_consumer(database_url, replayed)
    assert (outcome.applied, outcome.duplicates) == (0, 4)
    assert db.execute("SELECT * FROM jobs ORDER BY booking_id").fetchall() == before

    # One entity only, and a dry run writes nothing.
    clear_outbox(database_url)
    one = await replay_store(engine, StoreFilter("square", entity_type="booking", entity_id="bk0"))
    assert one.enqueued == 2
    clear_outbox(database_url)
    later = await replay_store(
        engine, StoreFilter("square", since=datetime.now(UTC) + timedelta(minutes=1))
    )
    assert later.matched == 0
    dry = await replay_store(engine, StoreFilter("square"), dry_run=True)
    assert (dry.matched, dry.enqueued) == (4, 0)
    assert outbox_rows(db) == []
    with pytest.raises(NoRebuilderError):
        await replay_store(engine, StoreFilter("nowhere"))


async def test_dead_letters_are_redriven_through_the_outbox(
    engine: AsyncEngine, db: psycopg.Connection[Any]
) -> None:
    value = json.dumps({"id": "ev1", "data": {"x": 1}}).encode()
    db.execute(
        """INSERT INTO dead_letters (consumer, topic, partition, "offset", key, value, headers,
               event_id, error_type, error)
           VALUES ('jobs', 'square.bookings', 3, 17, 'bk9', %s, %s, 'ev1', 'Boom', 'broke'),
                  ('jobs', 'square.bookings', 3, 18, 'bk9', 'not json', '{}', 'ev2', 'Boom', 'x')
        """,
        (value, json.dumps({"ce_id": "ev1", "dlq_error": "it broke"})),
    )
    listed = await list_dead_letters(engine)
    assert [d.offset for d in listed] == [17, 18]
    first, second = (d.id for d in listed)

    result = await redrive(engine, first, actor="cli:ops")
    assert result.as_json() == {"redriven": [first], "errors": []}
    (row,) = outbox_rows(db)
    assert (row["topic"], row["key"], row["payload"]) == (
        "square.bookings",
        "bk9",
        json.loads(value),
    )
    assert row["headers"] == {"ce_id": "ev1", "sluice-redrive-of": str(first)}

    everything = await redrive(engine, None, actor="cli:ops")
    assert everything.redriven == []
    assert [e["id"] for e in everything.errors] == [second]  # not JSON: isolated, reported
    assert [d.id for d in await list_dead_letters(engine)] == [second]
    assert len(await list_dead_letters(engine, pending_only=False)) == 2
    assert len(outbox_rows(db)) == 1
    again = await redrive(engine, first, actor="cli:ops")  # a repeated redrive does nothing
    assert again.redriven == []
    assert len(outbox_rows(db)) == 1

    # The one that cannot be redriven is discarded, with a reason; nothing is put back.
    with pytest.raises(ValueError, match="reason"):
        await discard(engine, second, reason=" ", actor="cli:ops")
    gone = await discard(engine, second, reason="test data", actor="cli:ops")
    assert gone.as_json() == {"discarded": [second]}
    assert (await discard(engine, second, reason="again", actor="cli:ops")).discarded == []
    assert await list_dead_letters(engine) == []
    assert len(outbox_rows(db)) == 1
    marks = {d.id: d.as_json() for d in await list_dead_letters(engine, pending_only=False)}
    assert (marks[first]["redriven_by"], marks[first]["discarded_at"]) == ("cli:ops", None)
    assert (marks[second]["discarded_by"], marks[second]["discard_reason"]) == (
        "cli:ops",
        "test data",
    )
    assert marks[second]["redriven_at"] is None
    log = await read_audit(engine)
    assert [(e["actor"], e["action"], e["target"], e["detail"]) for e in log] == [
        ("cli:ops", "dlq.discard", f"dead_letter:{second}", {"reason": "test data"}),
        ("cli:ops", "dlq.redrive", f"dead_letter:{first}", {}),
    ]


async def _topic_with_messages(bootstrap: str) -> tuple[str, int]:
    """A fresh two-partition topic with 3 + 3 messages, 6 before and after the middle time."""
    topic = f"replay-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 2, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    middle = 0
    try:
        for n in range(6):
            if n == 2:
                await asyncio.sleep(0.05)
                middle = int(time.time() * 1000)
                await asyncio.sleep(0.05)
            await producer.send_and_wait(topic, b"{}", partition=n % 2)
    finally:
        await producer.stop()
    return topic, middle


async def _committed(bootstrap: str, topic: str, group: str) -> list[int | None]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
    await consumer.start()
    try:
        return [await consumer.committed(TopicPartition(topic, p)) for p in (0, 1)]
    finally:
        await consumer.stop()


@pytest.mark.broker
async def test_replay_kafka_moves_offsets_of_an_idle_group(kafka_bootstrap: str) -> None:
    topic, middle = await _topic_with_messages(kafka_bootstrap)
    group = f"g-{uuid.uuid4().hex[:8]}"
    moves = await reset_offsets(kafka_bootstrap, topic, group, ToEarliest(), dry_run=True)
    assert [(m.before, m.after) for m in moves] == [(None, 0), (None, 0)]
    assert await _committed(kafka_bootstrap, topic, group) == [None, None]

    await reset_offsets(kafka_bootstrap, topic, group, Shift(100))
    assert await _committed(kafka_bootstrap, topic, group) == [3, 3]
    moved = await reset_offsets(
        kafka_bootstrap, topic, group, ToDatetime(datetime.fromtimestamp(middle / 1000, UTC))
    )
    assert [m.as_json() for m in moved] == [
        {"partition": 0, "from": 3, "to": 1},
        {"partition": 1, "from": 3, "to": 1},
    ]
    await reset_offsets(kafka_bootstrap, topic, group, Shift(-5))
    assert await _committed(kafka_bootstrap, topic, group) == [0, 0]
    future = datetime.now(UTC) + timedelta(hours=1)
    await reset_offsets(kafka_bootstrap, topic, group, ToDatetime(future))
    assert await _committed(kafka_bootstrap, topic, group) == [3, 3]


@pytest.mark.broker
async def test_replay_kafka_refuses_while_the_group_has_members(kafka_bootstrap: str) -> None:
    topic, _ = await _topic_with_messages(kafka_bootstrap)
    group = f"g-{uuid.uuid4().hex[:8]}"
    live = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await live.start()
    try:
        await live.getmany(timeout_ms=2000)
        await live.commit({TopicPartition(topic, 0): OffsetAndMetadata(2, "")})
        with pytest.raises(GroupActiveError):
            await reset_offsets(kafka_bootstrap, topic, group, ToEarliest())
    finally:
        await live.stop()
