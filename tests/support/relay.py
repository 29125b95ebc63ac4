"""Shared pieces of the relay tests: writing outbox rows, running relays, reading Kafka."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Protocol

import psycopg
from aiokafka import AIOKafkaConsumer
from sqlalchemy import text

from outbox.enqueue import OutboxMessage, enqueue
from outbox.relay import Relay, RelayConfig
from outbox.topics import ensure_topics
from sluice.db import create_engine, transaction
from tests.support.services import libpq_url

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Sequence
    from pathlib import Path


class Record(Protocol):
    """What the tests read of an aiokafka ConsumerRecord (aiokafka ships no type hints)."""

    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]]
    timestamp: int
    partition: int
    offset: int


# Short leases so takeovers happen within a test; the request timeout must stay under a quarter.
LEASE_SECONDS = 3.0
REQUEST_TIMEOUT_MS = 500


def relay_config(database_url: str, bootstrap: str, **overrides: Any) -> RelayConfig:
    config = RelayConfig(
        database_url=database_url,
        bootstrap_servers=bootstrap,
        idempotence=False,  # the embedded broker has no idempotent producer support
        request_timeout_ms=REQUEST_TIMEOUT_MS,
        lease_seconds=LEASE_SECONDS,
        batch_size=100,
        poll_seconds=1.0,
        max_backoff_seconds=0.5,
    )
    return replace(config, **overrides)


def relay_env(database_url: str, bootstrap: str, batch_size: int = 50) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "SLUICE_KAFKA_IDEMPOTENCE": "false",
        "SLUICE_RELAY_LEASE_SECONDS": str(LEASE_SECONDS),
        "SLUICE_KAFKA_REQUEST_TIMEOUT_MS": str(REQUEST_TIMEOUT_MS),
        "SLUICE_RELAY_BATCH_SIZE": str(batch_size),
        "SLUICE_RELAY_POLL_SECONDS": "1",
        "SLUICE_LOG_FORMAT": "json",
    }


def start_relay_process(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "sluice", "relay"], env=env, stdout=log, stderr=log
        )


async def fresh_topic(bootstrap: str, partitions: int = 4) -> str:
    topic = f"test.relay.{uuid.uuid4().hex[:10]}"
    await ensure_topics(bootstrap, [topic], partitions=partitions)
    return topic


def message(topic: str, key: str, seq: int) -> OutboxMessage:
    event_id = uuid.uuid4()
    return OutboxMessage.of(
        topic,
        key,
        {"id": str(event_id), "key": key, "seq": seq},
        {"ce_id": str(event_id), "ce_type": "test.event", "ce_source": "tests"},
        event_id,
    )


async def write_rows(database_url: str, messages: Sequence[OutboxMessage]) -> None:
    engine = create_engine(database_url, pool_size=1)
    try:
        async with transaction(engine) as conn:
            await enqueue(conn, messages)
    finally:
        await engine.dispose()


def outbox_count(database_url: str) -> int:
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM outbox").fetchone()
        assert row is not None
        return int(row[0])


@contextlib.asynccontextmanager
async def running_relay(config: RelayConfig, **kwargs: Any) -> AsyncIterator[Relay]:
    relay = Relay(config, **kwargs)
    task = asyncio.create_task(relay.run())
    try:
        yield relay
    finally:
        relay.stop()
        await asyncio.wait_for(task, 15)


async def consume(
    bootstrap: str,
    topic: str,
    *,
    until: Callable[[list[Record]], bool],
    within: float = 20.0,
) -> list[Record]:
    """Read `topic` from the beginning until `until(records)` holds."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        fetch_max_wait_ms=50,
    )
    await consumer.start()
    records: list[Record] = []
    try:
        deadline = time.monotonic() + within
        while not until(records):
            if time.monotonic() > deadline:
                raise AssertionError(f"only {len(records)} messages arrived on {topic}")
            batches = await consumer.getmany(timeout_ms=200)
            for partition in sorted(batches, key=lambda tp: tp.partition):
                records.extend(batches[partition])
    finally:
        await consumer.stop()
    return records


def seq_of(record: Record) -> tuple[str, int]:
    assert record.value is not None
    body = json.loads(record.value)
    return body["key"], body["seq"]


async def next_seq(conn: Any, keys: Sequence[str]) -> dict[str, int]:
    """Per key, the next number in commit order: the row lock on key_seq is held until commit,
    so a later transaction on the same key sees the earlier one's number."""
    numbers: dict[str, int] = {}
    for key in sorted(keys):  # one lock order for every writer: no deadlocks
        result = await conn.execute(
            text(
                "INSERT INTO key_seq (key, n) VALUES (:k, 1) "
                "ON CONFLICT (key) DO UPDATE SET n = key_seq.n + 1 RETURNING n"
            ),
            {"k": key},
        )
        numbers[key] = int(result.scalar_one())
    return numbers
