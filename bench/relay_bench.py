"""Relay benchmark: drain a backlog, compare with a raw producer, then steady-state latency.

Starts an embedded PostgreSQL and Kafka-protocol broker (or uses DATABASE_URL /
KAFKA_BOOTSTRAP_SERVERS), a fresh database and a fresh topic, then:

1. drain: N outbox rows (CloudEvents-sized envelopes, 5,000 keys) published by one relay, rows/s;
2. raw: the same N messages sent by a bare aiokafka producer with the same settings, msgs/s, and
   the relay's share of it;
3. steady: rows committed at a fixed rate while `sluice relay` runs as its own process; latency
   p50/p99 from the writer's commit returning to (a) the record batch being stamped by the relay
   just before it is sent and (b) a consumer, in a process of its own, receiving the message (an
   upper bound of commit → Kafka append: Tansu keeps no append time).

    python bench/relay_bench.py [--rows 100000] [--rate 1000] [--seconds 10] [--idempotence]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import psycopg
import uvloop
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from devkit.embedded import EmbeddedBroker, EmbeddedPostgres, free_port
from outbox.enqueue import OutboxMessage, enqueue
from outbox.relay import Relay, RelayConfig, quiet_kafka_client_logs
from outbox.topics import ensure_topics
from sluice.db import create_engine, libpq_url, transaction
from sluice.migrate import upgrade

KEYS = 5000
PARTITIONS = 12


def envelope(seq: int, key: str) -> tuple[dict[str, object], dict[str, str]]:
    event_id = str(uuid.uuid4())
    now = "2024-05-01T10:00:00Z"
    payload: dict[str, object] = {
        "specversion": "1.0",
        "id": event_id,
        "source": "https://connect.squareup.com/bench",
        "type": "square.booking.updated",
        "subject": key,
        "time": now,
        "datacontenttype": "application/json",
        "providereventid": f"evt-{seq}",
        "receivedat": now,
        "entitytype": "booking",
        "data": {
            "merchant_id": "ML8M1AQ1GQG2K",
            "type": "booking.updated",
            "event_id": f"evt-{seq}",
            "created_at": now,
            "data": {
                "type": "booking",
                "id": key,
                "object": {
                    "booking": {
                        "id": key,
                        "version": seq,
                        "status": "ACCEPTED",
                        "created_at": now,
                        "updated_at": now,
                        "location_id": "LKRXNYXSGAQXJ",
                        "customer_id": "7DP3JKE6HQ6X6GZG3R6F7JGXHC",
                        "customer_note": "x" * 300,
                        "start_at": "2024-05-02T09:00:00Z",
                        "appointment_segments": [
                            {
                                "duration_minutes": 60,
                                "service_variation_id": "GUN7HNQBH7ZRARYZN52E7O4B",
                                "team_member_id": "2_uNFkqPYqV-AZB-7neN",
                                "service_variation_version": 1599775456731,
                            }
                        ],
                    }
                },
            },
        },
    }
    headers = {
        "ce_specversion": "1.0",
        "ce_id": event_id,
        "ce_source": "https://connect.squareup.com/bench",
        "ce_type": "square.booking.updated",
        "ce_time": now,
        "ce_subject": key,
        "content-type": "application/json",
    }
    return payload, headers


def fill_backlog(url: str, topic: str, rows: int) -> None:
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        batch: list[tuple[str, str, str, str]] = []
        for seq in range(rows):
            key = f"bk-{seq % KEYS}"
            payload, headers = envelope(seq, key)
            batch.append((topic, key, json.dumps(payload), json.dumps(headers)))
            if len(batch) == 5000 or seq == rows - 1:
                with conn.cursor() as cur:
                    cur.executemany(
                        "INSERT INTO outbox (topic, key, payload, headers) VALUES (%s,%s,%s,%s)",
                        batch,
                    )
                batch = []


def load_messages(url: str) -> list[tuple[str, bytes, bytes, list[tuple[str, bytes]]]]:
    with psycopg.connect(libpq_url(url)) as conn:
        rows = conn.execute(
            "SELECT topic, key, payload::text, headers::text FROM outbox ORDER BY id"
        ).fetchall()
    return [
        (t, k.encode(), p.encode(), [(n, v.encode()) for n, v in json.loads(h).items()])
        for t, k, p, h in rows
    ]


def vacuum(url: str) -> None:
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE) outbox")


async def drain(config: RelayConfig, rows: int) -> float:
    relay = Relay(config)
    task = asyncio.create_task(relay.run())
    # Timed once connected and holding its buckets, as the raw producer is timed after start().
    while not relay.leases.held:
        if task.done():
            task.result()
        await asyncio.sleep(0.001)
    started = time.perf_counter()
    while relay.metrics.value("sluice_relay_published") < rows:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - started
    relay.stop()
    await task
    return elapsed


async def raw_producer(
    bootstrap: str,
    messages: list[tuple[str, bytes, bytes, list[tuple[str, bytes]]]],
    *,
    idempotence: bool,
    batch: int,
) -> float:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=idempotence,
        linger_ms=0,
        max_batch_size=256 * 1024,
        max_request_size=4 * 1024 * 1024,
    )
    await producer.start()
    try:
        started = time.perf_counter()
        # The same shape of work as the relay: hand over a batch, then await its acks.
        for offset in range(0, len(messages), batch):
            futures = [
                await producer.send(topic, value, key=key, headers=headers)
                for topic, key, value, headers in messages[offset : offset + batch]
            ]
            await asyncio.gather(*futures)
        return time.perf_counter() - started
    finally:
        await producer.stop()


def start_relay_process(config: RelayConfig, metrics_port: int) -> subprocess.Popen[bytes]:
    """The relay as in production: its own process, so the load generator cannot stall it."""
    env = {
        "SLUICE_METRICS_PORT": str(metrics_port),
        **os.environ,
        "DATABASE_URL": config.database_url,
        "KAFKA_BOOTSTRAP_SERVERS": config.bootstrap_servers,
        "SLUICE_KAFKA_IDEMPOTENCE": str(config.idempotence).lower(),
        "SLUICE_RELAY_BATCH_SIZE": str(config.batch_size),
        "SLUICE_LOG_LEVEL": "warning",
    }
    return subprocess.Popen([sys.executable, "-m", "sluice", "relay"], env=env)


def consume_in_process(bootstrap: str, topic: str, ready: Any, written: Any, out: Any) -> None:  # noqa: ANN401 - multiprocessing handles
    """Runs in its own process, so the writer's work cannot delay a receipt: the wall-clock time
    each message arrived, and the publish timestamp the relay stamped on it, by event id."""

    async def consume() -> dict[bytes, tuple[float, int]]:
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            auto_offset_reset="latest",
            fetch_max_wait_ms=5,
            enable_auto_commit=False,
        )
        await consumer.start()
        while not consumer.assignment():
            await consumer.getmany(timeout_ms=100)
        for partition in consumer.assignment():
            await consumer.position(partition)  # fix "latest" now, before anything is written
        ready.set()
        seen: dict[bytes, tuple[float, int]] = {}
        deadline = time.monotonic() + 60
        quiet_since = time.monotonic()
        # Until the writer is done and nothing has arrived for a second.
        while time.monotonic() < deadline and not (
            written.is_set() and time.monotonic() - quiet_since > 1.0
        ):
            batches = await consumer.getmany(timeout_ms=200)
            now = time.time()
            for messages in batches.values():
                for message in messages:
                    seen[dict(message.headers)["ce_id"]] = (now, message.timestamp)
                    quiet_since = time.monotonic()
        await consumer.stop()
        return seen

    out.send(uvloop.run(consume()))


async def steady(
    config: RelayConfig, topic: str, rate: int, seconds: float
) -> tuple[list[float], int]:
    metrics_port = free_port()
    relay = start_relay_process(config, metrics_port)
    total = int(rate * seconds)
    context = multiprocessing.get_context("spawn")
    ready, written = context.Event(), context.Event()
    receiver, sender = context.Pipe(duplex=False)
    consumer = context.Process(
        target=consume_in_process, args=(config.bootstrap_servers, topic, ready, written, sender)
    )
    consumer.start()
    committed: dict[bytes, float] = {}

    engine = create_engine(config.database_url, pool_size=8)
    per_tx = 4
    interval = per_tx / rate

    async def write(seq: int) -> None:
        messages = []
        for i in range(per_tx):
            key = f"bk-{random.randrange(KEYS)}"
            payload, headers = envelope(seq * per_tx + i, key)
            messages.append(OutboxMessage.of(topic, key, payload, headers))
        async with transaction(engine) as conn:
            await enqueue(conn, messages)
        wall = time.time()
        for m in messages:
            committed[m.headers["ce_id"].encode()] = wall

    await asyncio.to_thread(ready.wait, 30)
    await asyncio.sleep(3)  # leases taken
    writers: set[asyncio.Task[None]] = set()
    started = time.perf_counter()
    for seq in range(total // per_tx):
        await asyncio.sleep(max(0.0, started + seq * interval - time.perf_counter()))
        task = asyncio.create_task(write(seq))
        writers.add(task)
        task.add_done_callback(writers.discard)
    await asyncio.gather(*writers)
    written.set()
    seen: dict[bytes, tuple[float, int]] = await asyncio.to_thread(receiver.recv)
    consumer.join(15)
    lag = await asyncio.to_thread(publish_lag_buckets, metrics_port)
    relay.send_signal(signal.SIGTERM)
    relay.wait(15)
    await engine.dispose()
    latencies = [(seen[k][0] - at) * 1000 for k, at in committed.items() if k in seen]
    stamped = [seen[k][1] - at * 1000 for k, at in committed.items() if k in seen]
    acked = lag[-1][1]
    within = next(count for le, count in lag if le == 0.05)
    print(
        f"commit → broker ack (the relay's sluice_relay_publish_lag_seconds, {acked:,.0f} rows): "
        f"p50 ≤ {bucket_bound(lag, 0.5) * 1000:.0f} ms, p99 ≤ {bucket_bound(lag, 0.99) * 1000:.0f} "
        f"ms; {100 * within / acked:.2f}% within 50 ms"
    )
    print(
        f"(commit → batch stamped by the relay: p50 {percentile(stamped, 0.5):.1f} ms, "
        f"p99 {percentile(stamped, 0.99):.1f} ms)"
    )
    return latencies, total


def publish_lag_buckets(port: int) -> list[tuple[float, float]]:
    """The relay's publish-lag histogram: cumulative (upper bound, rows) pairs."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    buckets = [
        (float(sample.labels["le"]), sample.value)
        for family in text_string_to_metric_families(text)
        if family.name == "sluice_relay_publish_lag_seconds"
        for sample in family.samples
        if sample.name.endswith("_bucket")
    ]
    return sorted(buckets)


def bucket_bound(buckets: list[tuple[float, float]], q: float) -> float:
    """The smallest bucket bound that holds the q-quantile."""
    total = buckets[-1][1]
    return next(le for le, count in buckets if count >= q * total)


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000)[int(q * 1000) - 1]


async def run(args: argparse.Namespace, database_url: str, bootstrap: str) -> None:
    quiet_kafka_client_logs()
    topic = f"bench.relay.{uuid.uuid4().hex[:8]}"
    await ensure_topics(bootstrap, [topic], partitions=PARTITIONS)
    config = RelayConfig(
        database_url=database_url,
        bootstrap_servers=bootstrap,
        idempotence=args.idempotence,
        batch_size=args.batch,
    )

    print(f"filling {args.rows:,} outbox rows ...", flush=True)
    await asyncio.to_thread(fill_backlog, database_url, topic, args.rows)
    messages = await asyncio.to_thread(load_messages, database_url)
    value_bytes = statistics.mean(len(m[2]) for m in messages)

    relay_s = await drain(config, args.rows)
    relay_rate = args.rows / relay_s
    raw_s = await raw_producer(bootstrap, messages, idempotence=args.idempotence, batch=args.batch)
    raw_rate = len(messages) / raw_s
    print(f"message value        {value_bytes:,.0f} bytes, {len(messages[0][3])} headers")
    print(f"relay drain          {args.rows:,} rows in {relay_s:.2f} s = {relay_rate:,.0f} rows/s")
    print(f"raw aiokafka         {len(messages):,} msgs in {raw_s:.2f} s = {raw_rate:,.0f} msgs/s")
    print(f"relay / raw          {relay_rate / raw_rate:.0%}")

    # The drain left 100,000 dead rows; autovacuum (tuned for outbox in migration 0002) removes
    # them within seconds in production. Do it now so the steady phase starts from that state.
    await asyncio.to_thread(vacuum, database_url)
    latencies, total = await steady(config, topic, args.rate, args.seconds)
    print(
        f"steady {args.rate:,} rows/s for {args.seconds:.0f} s: {len(latencies):,}/{total:,} "
        f"arrived; commit → consumer p50 {percentile(latencies, 0.5):.1f} ms, "
        f"p99 {percentile(latencies, 0.99):.1f} ms, max {max(latencies):.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument(
        "--idempotence", action="store_true", help="idempotent producer (not on Tansu)"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="sluice-relay-bench-") as tmp:
        postgres = broker = None
        database_url = os.environ.get("DATABASE_URL")
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        try:
            if database_url is None:
                postgres = EmbeddedPostgres(Path(tmp) / "pg")
                admin_url = postgres.start()
            else:
                admin_url = database_url.replace("postgresql://", "postgresql+psycopg://", 1)
            if bootstrap is None:
                broker = EmbeddedBroker()
                bootstrap = broker.start()
            name = f"relay_bench_{uuid.uuid4().hex[:8]}"
            with psycopg.connect(libpq_url(admin_url), autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{name}"')
            database_url = admin_url.rsplit("/", 1)[0] + f"/{name}"
            upgrade(database_url)
            uvloop.run(run(args, database_url, bootstrap))
            with psycopg.connect(libpq_url(admin_url), autocommit=True) as conn:
                conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        finally:
            if broker is not None:
                broker.stop()
            if postgres is not None:
                postgres.stop()


if __name__ == "__main__":
    main()
