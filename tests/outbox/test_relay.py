from __future__ import annotations

import asyncio
import json
import random
import signal
import time
import uuid
from collections import defaultdict
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from sqlalchemy import event
from typer.testing import CliRunner

from commands.main import app
from devkit.dev import dev_components
from devkit.embedded import EmbeddedBroker
from outbox.enqueue import OutboxMessage, enqueue
from outbox.leases import BUCKETS, BucketLeases
from outbox.rows import delete_rows
from outbox.topics import ensure_topics, pipeline_topics
from sluice.db import create_engine, transaction
from sluice.settings import Settings
from tests.support.proxy import CuttableProxy
from tests.support.relay import (
    LEASE_SECONDS,
    consume,
    fresh_topic,
    message,
    next_seq,
    outbox_count,
    relay_config,
    relay_env,
    running_relay,
    seq_of,
    start_relay_process,
    write_rows,
)
from tests.support.services import libpq_url
from tests.support.waiting import eventually

if TYPE_CHECKING:
    from pathlib import Path

    from sqlalchemy.ext.asyncio import AsyncEngine

    from tests.support.relay import Record

Conn = psycopg.Connection[tuple[Any, ...]]

pytestmark = pytest.mark.broker


def assert_in_commit_order(records: list[Record], expected: dict[str, int]) -> None:
    """Every key's numbers 1..n arrived, first occurrences in order; repeats are allowed."""
    seen: dict[str, list[int]] = defaultdict(list)
    for record in records:
        key, seq = seq_of(record)
        assert record.key == key.encode()
        if seq not in seen[key]:
            seen[key].append(seq)
    assert dict(seen) == {key: list(range(1, n + 1)) for key, n in expected.items()}


async def test_message_carries_key_cloudevents_headers_and_envelope(
    database_url: str, kafka_bootstrap: str, db: Conn
) -> None:
    topic = await fresh_topic(kafka_bootstrap)
    event_id = uuid.uuid4()
    headers = {
        "ce_specversion": "1.0",
        "ce_id": str(event_id),
        "ce_source": "https://connect.squareup.com/ML8M1AQ1GQG2K",
        "ce_type": "square.booking.updated",
        "ce_time": "2024-05-01T10:00:00Z",
        "ce_subject": "bk1example",
        "content-type": "application/json",
    }
    payload = {"specversion": "1.0", "id": str(event_id), "data": {"amount": 1.50, "n": [1, 2]}}
    await write_rows(
        database_url, [OutboxMessage.of(topic, "bk1example", payload, headers, event_id)]
    )
    before = time.time() * 1000

    async with running_relay(relay_config(database_url, kafka_bootstrap)):
        records = await consume(kafka_bootstrap, topic, until=lambda r: len(r) >= 1)
        await eventually(lambda: outbox_count(database_url) == 0, 5, "the row to be deleted")

    (record,) = records
    assert record.key == b"bk1example"
    assert {name: value.decode() for name, value in record.headers} == headers
    assert record.value is not None
    assert json.loads(record.value) == payload
    assert before <= record.timestamp <= time.time() * 1000  # publish time, not commit time


async def test_three_relays_one_killed_keep_commit_order_per_key(
    database_url: str, kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic = await fresh_topic(kafka_bootstrap, partitions=4)
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        conn.execute("CREATE TABLE key_seq (key text PRIMARY KEY, n int NOT NULL)")
    env = relay_env(database_url, kafka_bootstrap, batch_size=20)
    relays = [start_relay_process(env, tmp_path / f"relay{i}.log") for i in range(3)]
    engine = create_engine(database_url, pool_size=6)
    keys = [f"key-{i}" for i in range(10)]
    expected: dict[str, int] = defaultdict(int)
    rng = random.Random(7)

    async def writer(transactions: int) -> None:
        for _ in range(transactions):
            chosen = rng.sample(keys, rng.randint(1, 3))
            async with transaction(engine) as conn:
                numbers = await next_seq(conn, chosen)
                await enqueue(conn, [message(topic, key, numbers[key]) for key in chosen])
                # Hold the commit a moment: ids and commit order of different keys now differ.
                await asyncio.sleep(rng.random() * 0.01)
            for key, n in numbers.items():
                expected[key] = max(expected[key], n)

    try:
        await asyncio.gather(*(writer(60) for _ in range(4)))
        relays[0].send_signal(signal.SIGKILL)  # mid-run: other relays take over its buckets
        await asyncio.gather(*(writer(60) for _ in range(4)))
        await eventually(lambda: outbox_count(database_url) == 0, 30, "the outbox to drain")
    finally:
        for process in relays:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in relays:
            process.wait(15)
        await engine.dispose()

    total = sum(expected.values())
    records = await consume(
        kafka_bootstrap, topic, until=lambda r: len({seq_of(x) for x in r}) >= total
    )
    assert_in_commit_order(records, expected)
    assert relays[1].returncode == 0  # the survivors shut down cleanly


async def test_relay_killed_mid_batch_loses_nothing(
    database_url: str, kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic = await fresh_topic(kafka_bootstrap)
    rows = 4000
    await write_rows(database_url, [message(topic, f"k{i % 50}", i // 50 + 1) for i in range(rows)])
    victim = start_relay_process(relay_env(database_url, kafka_bootstrap, 25), tmp_path / "v.log")
    try:
        # Watched closely: the relay drains a batch every few milliseconds.
        await eventually(
            lambda: outbox_count(database_url) < rows - 100, 20, "publishing", interval=0.002
        )
    finally:
        victim.send_signal(signal.SIGKILL)
        victim.wait()
    left = outbox_count(database_url)
    assert 0 < left < rows

    engine = create_engine(database_url, pool_size=1)
    try:
        # The dead relay's leases still stand: nobody may take its buckets yet.
        early = BucketLeases(engine, "early-bird", LEASE_SECONDS)
        change = await early.maintain()
        assert change.acquired == []
        await early.release_all()
    finally:
        await engine.dispose()

    async with running_relay(relay_config(database_url, kafka_bootstrap)):
        await eventually(lambda: outbox_count(database_url) == 0, 20, "the outbox to drain")
    records = await consume(
        kafka_bootstrap, topic, until=lambda r: len({seq_of(x) for x in r}) >= rows
    )
    assert_in_commit_order(records, {f"k{i}": rows // 50 for i in range(50)})


def recorded_statements(engine: AsyncEngine) -> list[str]:
    statements: list[str] = []

    def record(*args: Any) -> None:
        statements.append(args[2])

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    return statements


async def test_idle_relay_sleeps_and_wakes_on_commit(
    database_url: str, kafka_bootstrap: str
) -> None:
    topic = await fresh_topic(kafka_bootstrap)
    config = relay_config(database_url, kafka_bootstrap, poll_seconds=60.0, lease_seconds=30.0)
    async with running_relay(config) as relay:
        await eventually(lambda: relay.state == "healthy", 10, "the relay to start")
        await asyncio.sleep(0.5)
        statements = recorded_statements(relay._engine)
        await asyncio.sleep(3)
        idle_queries = len(statements)

        started = time.monotonic()
        await write_rows(database_url, [message(topic, "k", 1)])
        await eventually(lambda: outbox_count(database_url) == 0, 5, "the row to be published")
        woke_after = time.monotonic() - started

    assert idle_queries <= 2  # no busy polling: at most a lease renewal
    assert woke_after < 2  # NOTIFY, not the 60 s poll


async def test_leases_expire_and_an_old_owner_cannot_delete(database_url: str) -> None:
    engine = create_engine(database_url, pool_size=2)
    try:
        first = BucketLeases(engine, "first", 1.0)
        second = BucketLeases(engine, "second", 1.0)
        assert (await first.maintain()).acquired == list(range(BUCKETS))
        # Fair share is 32 each, but nothing is free until "first" releases or expires.
        change = await second.maintain()
        assert change.acquired == []
        assert change.fair_share == BUCKETS // 2
        change = await first.maintain()
        assert len(change.released) == BUCKETS // 2  # surplus handed back at renewal
        assert len((await second.maintain()).acquired) == BUCKETS // 2

        await write_rows(database_url, [message("t", f"k{i}", 1) for i in range(200)])
        async with transaction(engine) as conn:
            rows = (await conn.exec_driver_sql("SELECT id, bucket FROM outbox")).all()
        first_ids = [row.id for row in rows if row.bucket in first.held]
        stale_tokens = first.tokens

        # "first" stalls past its lease while "second" keeps renewing.
        await asyncio.sleep(0.6)
        assert (await second.maintain()).acquired == []
        await asyncio.sleep(0.6)
        taken = await second.maintain()
        assert sorted(taken.acquired) == sorted(first.held)  # expired buckets were free
        assert await delete_rows(engine, first_ids, stale_tokens) == 0
        lost = await first.maintain()
        assert sorted(lost.lost) == sorted(taken.acquired)
        assert await delete_rows(engine, first_ids, second.tokens) == len(first_ids)
    finally:
        await engine.dispose()


async def test_broker_outage_keeps_rows_and_recovers(database_url: str) -> None:
    broker = EmbeddedBroker()
    bootstrap = broker.start()
    topic = f"test.outage.{uuid.uuid4().hex[:8]}"
    try:
        await ensure_topics(bootstrap, [topic], partitions=2)
        async with running_relay(relay_config(database_url, bootstrap)) as relay:
            await write_rows(database_url, [message(topic, "k", 1)])
            await eventually(lambda: outbox_count(database_url) == 0, 10, "the first publish")

            broker.stop()
            await write_rows(database_url, [message(topic, "k", n) for n in range(2, 22)])
            await eventually(lambda: relay.state == "kafka_down", 10, "the relay to notice")
            await asyncio.sleep(3)  # several retries, with backoff
            assert outbox_count(database_url) == 20

            broker.start()  # memory storage: the topic is gone, and must not be auto-created
            await eventually(lambda: relay.state == "topic_missing", 15, "the missing topic")
            assert outbox_count(database_url) == 20
            await ensure_topics(bootstrap, [topic], partitions=2)
            await eventually(lambda: outbox_count(database_url) == 0, 15, "recovery")
            history = relay.state_history
        records = await consume(bootstrap, topic, until=lambda r: len(r) >= 20)
    finally:
        broker.stop()
    # The first message went down with the memory-only broker; the 20 kept rows arrive in order.
    assert [seq for _, seq in map(seq_of, records)][:20] == list(range(2, 22))
    # One log line per state change, not one per attempt.
    assert history == ["starting", "healthy", "kafka_down", "topic_missing", "healthy"]


async def test_database_outage_keeps_rows_and_recovers(
    database_url: str, kafka_bootstrap: str
) -> None:
    topic = await fresh_topic(kafka_bootstrap)
    parts = urlsplit(database_url)
    assert parts.hostname is not None
    assert parts.port is not None
    proxy = CuttableProxy(parts.hostname, parts.port)
    await proxy.start()
    via_proxy = urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{proxy.port}"))
    try:
        async with running_relay(relay_config(via_proxy, kafka_bootstrap)) as relay:
            await eventually(lambda: relay.state == "healthy", 10, "the relay to start")
            await proxy.cut()
            await write_rows(database_url, [message(topic, "k", n) for n in range(1, 11)])
            await eventually(lambda: relay.state == "database_down", 10, "the relay to notice")
            await asyncio.sleep(1)
            assert outbox_count(database_url) == 10
            await proxy.restore()
            await eventually(lambda: outbox_count(database_url) == 0, 20, "recovery")
            assert relay.state == "healthy"
    finally:
        await proxy.cut()
    records = await consume(kafka_bootstrap, topic, until=lambda r: len(r) >= 10)
    assert_in_commit_order(records, {"k": 10})


async def test_missing_topic_is_never_auto_created(database_url: str, kafka_bootstrap: str) -> None:
    topic = f"test.missing.{uuid.uuid4().hex[:8]}"
    async with running_relay(relay_config(database_url, kafka_bootstrap)) as relay:
        await write_rows(database_url, [message(topic, "k", 1)])
        await eventually(lambda: relay.state == "topic_missing", 10, "the missing topic")
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        assert topic not in await admin.list_topics()
    finally:
        await admin.close()
    assert outbox_count(database_url) == 1


async def test_metrics_count_published_rows_and_backlog(
    database_url: str, kafka_bootstrap: str
) -> None:
    topic = await fresh_topic(kafka_bootstrap)
    await write_rows(database_url, [message(topic, f"k{i}", 1) for i in range(30)])
    async with running_relay(relay_config(database_url, kafka_bootstrap)) as relay:
        assert relay.metrics.value("sluice_outbox_backlog_rows") in (0, 30)
        await eventually(
            lambda: relay.metrics.value("sluice_relay_published") == 30, 10, "publishing"
        )
        await eventually(
            lambda: relay.metrics.value("sluice_outbox_backlog_rows") == 0, 5, "backlog refresh"
        )
        assert relay.metrics.value("sluice_relay_buckets_held") == BUCKETS
        assert relay.metrics.value("sluice_outbox_oldest_unpublished_age_seconds") == 0
        registry = relay.metrics.registry
        lag_count = registry.get_sample_value("sluice_relay_publish_lag_seconds_count")
        lag_sum = registry.get_sample_value("sluice_relay_publish_lag_seconds_sum")
        assert lag_count == 30  # one observation per published row
        assert lag_sum is not None
        assert 0 < lag_sum < 30 * 60  # seconds since each row's insert, all under a minute


async def test_topics_ensure_creates_pipeline_and_dlq_topics(kafka_bootstrap: str) -> None:
    result = await asyncio.to_thread(
        CliRunner().invoke,
        app,
        ["topics", "ensure", "--partitions", "3"],
        env={"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap},
    )
    assert result.exit_code == 0, result.output
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
    finally:
        await admin.close()
    assert set(pipeline_topics()) <= existing
    assert "square.bookings.dlq" in existing

    names = [f"test.ensure.{uuid.uuid4().hex[:8]}", f"test.ensure.{uuid.uuid4().hex[:8]}"]
    created = await ensure_topics(kafka_bootstrap, names, partitions=5)
    assert [(t.partitions, t.outcome) for t in created] == [(5, "created"), (5, "created")]
    again = await ensure_topics(kafka_bootstrap, names, partitions=6)
    assert [(t.partitions, t.outcome) for t in again] == [(5, "partitions_differ")] * 2


def test_dev_runs_the_relay() -> None:
    assert ("relay", ["relay"]) in dev_components(8000)


def test_lease_must_outlast_the_delivery_timeout() -> None:
    with pytest.raises(ValueError, match="LEASE_SECONDS"):
        Settings(SLUICE_RELAY_LEASE_SECONDS=10, SLUICE_KAFKA_REQUEST_TIMEOUT_MS=5000)
    assert Settings(SLUICE_RELAY_LEASE_SECONDS=20, SLUICE_KAFKA_REQUEST_TIMEOUT_MS=5000)
