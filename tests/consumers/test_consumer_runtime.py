"""The consumer runtime against the real broker: offsets, redelivery, dead letters."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from typing import TYPE_CHECKING, Any

import pytest
from aiokafka import AIOKafkaConsumer

from consumers.errors import DeadLetterLimitError
from consumers.runtime import ConsumerRuntime
from devkit.embedded import free_port
from devkit.simulate import square_event
from outbox.topics import ensure_topics
from tests.support.consumers import (
    consumed,
    fresh_topics,
    job,
    make_runtime,
    produce,
    running_consumer,
)
from tests.support.rows import scalar
from tests.support.waiting import eventually

if TYPE_CHECKING:
    from pathlib import Path

    from sqlalchemy.ext.asyncio import AsyncEngine

    from consumers.message import ConsumedMessage
    from tests.support.consumers import Conn

pytestmark = pytest.mark.broker


@pytest.fixture
def topics() -> tuple[str, str]:
    return fresh_topics()


def bookings(topics: tuple[str, str], count: int, version: int = 1) -> list[ConsumedMessage]:
    return [
        consumed(square_event("booking.created", entity_id=f"bk{i}", version=version), topics)
        for i in range(count)
    ]


def count(db: Conn, sql: str) -> int:
    value: int = scalar(db, sql)
    return value


async def test_messages_become_jobs_and_staff_edits_survive(
    engine: AsyncEngine, kafka_bootstrap: str, topics: tuple[str, str], db: Conn
) -> None:
    first = bookings(topics, 5)
    async with running_consumer(engine, kafka_bootstrap, topics) as runtime:
        await produce(kafka_bootstrap, first)
        await eventually(lambda: count(db, "SELECT count(*) FROM jobs") == 5)
        db.execute("UPDATE jobs SET notes = 'staff', work_status = 'done' WHERE booking_id = 'bk0'")

        update = square_event("booking.updated", entity_id="bk0", version=2)
        update["data"]["object"]["booking"]["status"] = "CANCELLED_BY_SELLER"
        # The update, then a redelivery of an old message and an older version.
        await produce(kafka_bootstrap, [consumed(update, topics), first[0], *bookings(topics, 1)])
        await eventually(lambda: runtime.stats.messages == 8)

    row = job(db, "bk0")
    assert row is not None
    assert (row["status"], row["booking_version"]) == ("CANCELLED_BY_SELLER", 2)
    assert (row["notes"], row["work_status"]) == ("staff", "done")
    assert (runtime.stats.applied, runtime.stats.duplicates) == (7, 1)


async def test_poison_message_goes_to_the_dead_letter_topic(
    engine: AsyncEngine, kafka_bootstrap: str, topics: tuple[str, str], db: Conn
) -> None:
    good = bookings(topics, 2)
    poison = consumed(square_event("booking.created", entity_id="bad"), topics)
    poison = type(poison)(poison.topic, 0, 0, poison.key, b"{not json", poison.headers)
    group = f"test-{uuid.uuid4().hex}"
    async with running_consumer(engine, kafka_bootstrap, topics, group_id=group) as runtime:
        await produce(kafka_bootstrap, [good[0], poison, good[1]])
        await eventually(lambda: runtime.stats.messages == 3)
    assert runtime.stats.dead_lettered == 1
    assert count(db, "SELECT count(*) FROM jobs") == 2
    assert (
        count(db, "SELECT count(*) FROM dead_letters WHERE error_type = 'InvalidMessageError'") == 1
    )

    reader = AIOKafkaConsumer(
        f"{topics[0]}.dlq", bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest"
    )
    await reader.start()
    try:
        record = await asyncio.wait_for(reader.getone(), 10)
    finally:
        await reader.stop()
    headers = {k: v.decode() for k, v in record.headers}
    assert record.value == b"{not json"
    assert headers["dlq_error_type"] == "InvalidMessageError"
    assert headers["dlq_topic"] == topics[0]
    assert headers["ce_id"] == poison.header("ce_id")

    # The partition moved on: the same group, restarted, has nothing left to read.
    async with running_consumer(engine, kafka_bootstrap, topics, group_id=group) as again:
        await asyncio.sleep(0.5)
    assert again.stats.messages == 0


async def test_dead_letter_limit_stops_the_consumer(
    engine: AsyncEngine, kafka_bootstrap: str, topics: tuple[str, str], db: Conn
) -> None:
    garbage = [type(m)(m.topic, 0, 0, m.key, b"[]", m.headers) for m in bookings(topics, 6)]
    await produce(kafka_bootstrap, garbage)
    runtime = make_runtime(engine, kafka_bootstrap, topics, dlq_max_ratio=0.1, dlq_window=20)

    with pytest.raises(DeadLetterLimitError):
        await asyncio.wait_for(runtime.run(), 20)

    # At most the two the limit allows were dead-lettered before it stopped.
    assert count(db, "SELECT count(*) FROM dead_letters") <= 2
    assert runtime.stats.dead_lettered <= 2


class SimulatedCrashError(Exception):
    pass


class CrashBeforeOffsetCommit(ConsumerRuntime[Any]):
    """Dies after the database commit and before the offset commit, like a kill -9 there."""

    async def _commit_offsets(self, *_: object) -> None:
        raise SimulatedCrashError


async def test_crash_between_database_and_offset_commit_has_no_double_effect(
    engine: AsyncEngine, kafka_bootstrap: str, topics: tuple[str, str], db: Conn
) -> None:
    group = f"test-{uuid.uuid4().hex}"
    await produce(kafka_bootstrap, bookings(topics, 4))
    crashing = make_runtime(
        engine, kafka_bootstrap, topics, group_id=group, runtime_class=CrashBeforeOffsetCommit
    )
    with pytest.raises(SimulatedCrashError):
        await asyncio.wait_for(crashing.run(), 20)
    applied_before = count(db, "SELECT count(*) FROM jobs")
    assert applied_before > 0
    rows_before = db.execute("SELECT booking_id, xmin::text FROM jobs ORDER BY 1").fetchall()

    async with running_consumer(engine, kafka_bootstrap, topics, group_id=group) as runtime:
        await eventually(lambda: runtime.stats.messages == 4)

    assert runtime.stats.duplicates == applied_before
    assert runtime.stats.applied == 4 - applied_before
    assert count(db, "SELECT count(*) FROM consumer_dedupe") == 4
    rows_after: dict[str, str] = dict(
        db.execute("SELECT booking_id, xmin::text FROM jobs").fetchall()
    )
    assert all(rows_after[booking_id] == xmin for booking_id, xmin in rows_before)


@pytest.mark.slow
async def test_consume_command_survives_kill_9(
    database_url: str, kafka_bootstrap: str, topics: tuple[str, str], db: Conn, tmp_path: Path
) -> None:
    group = f"test-{uuid.uuid4().hex}"
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "SLUICE_CONSUMER_SESSION_TIMEOUT_MS": "1000",
        "SLUICE_LOG_FORMAT": "json",
        "SLUICE_LOG_LEVEL": "warning",
    }
    command = [
        sys.executable, "-m", "sluice", "consume", "jobs",
        "--topic", topics[0], "--topic", topics[1], "--group-id", group,
    ]  # fmt: skip

    log = (tmp_path / "consumer.log").open("ab")

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(command, env=env, stderr=log)  # noqa: S603

    process = start()
    try:
        await produce(kafka_bootstrap, bookings(topics, 20))
        await eventually(lambda: count(db, "SELECT count(*) FROM jobs") == 20, within=30)
        process.send_signal(signal.SIGKILL)
        process.wait(10)

        await produce(kafka_bootstrap, [*bookings(topics, 20), *bookings(topics, 5, version=2)])
        process = start()
        await eventually(
            lambda: count(db, "SELECT count(*) FROM jobs WHERE booking_version = 2") == 5,
            within=30,
        )
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()
    assert count(db, "SELECT count(*) FROM jobs") == 20
    assert count(db, "SELECT count(*) FROM consumer_dedupe") == 45


async def test_rebalances_mid_stream_lose_nothing_and_apply_each_event_once(
    engine: AsyncEngine, kafka_bootstrap: str, topics: tuple[str, str], db: Conn
) -> None:
    await ensure_topics(kafka_bootstrap, topics, partitions=4)
    total = 1500
    await produce(kafka_bootstrap, bookings(topics, total))
    group = f"test-{uuid.uuid4().hex}"
    # Small batches, so both rebalances land while batches are decoded ahead and in flight.
    async with running_consumer(
        engine, kafka_bootstrap, topics, group_id=group, batch_max=20
    ) as first:
        await eventually(lambda: first.stats.applied >= 200)
        async with running_consumer(
            engine, kafka_bootstrap, topics, group_id=group, batch_max=20
        ) as second:
            await eventually(lambda: second.stats.messages > 0, within=20)
            first.stop()  # leaves mid-stream: the second takes its partitions over
            await eventually(lambda: count(db, "SELECT count(*) FROM jobs") == total, within=30)
            assert first.stats.messages < total

    assert count(db, "SELECT count(*) FROM consumer_dedupe") == total
    assert first.stats.applied + second.stats.applied == total


async def test_stopped_while_the_broker_is_out_of_reach_it_returns(
    engine: AsyncEngine, topics: tuple[str, str]
) -> None:
    """A consumer still retrying its start when asked to stop ends quietly, without raising."""
    runtime = make_runtime(engine, f"127.0.0.1:{free_port()}", topics)
    task = asyncio.create_task(runtime.run())
    await eventually(lambda: runtime.stats.failures >= 1)  # it is retrying the start
    runtime.stop()
    await asyncio.wait_for(task, 10)  # returns; raises if run() raised
    assert task.exception() is None
    assert runtime.stats.batches == 0
