"""Jobs consumer benchmark: apply rate from a pre-filled topic, and webhook-to-row latency.

1. apply rate: fills fresh topics with Square booking and customer events (shaped exactly as the
   relay publishes them), then runs the jobs consumer runtime until it has applied them all;
2. end to end: runs `sluice serve`, `sluice relay` and `sluice consume jobs` as processes, sends
   pre-signed booking.created webhooks at a fixed rate (bench/paced_client.py), and times each
   from its 2xx reaching the client to its jobs row being visible to another connection.

Starts an embedded PostgreSQL and broker unless DATABASE_URL / KAFKA_BOOTSTRAP_SERVERS are set.

    python bench/consumer_bench.py [--events 50000] [--rate 1000] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import psycopg
from aiokafka import AIOKafkaProducer
from paced_client import (  # bench/ is on sys.path
    PacedResult,
    http_post,
    send_paced_in_process,
)

from consumers.jobs import JobsProjection
from consumers.runtime import ConsumerConfig, ConsumerRuntime
from devkit.embedded import EmbeddedBroker, EmbeddedPostgres, free_port
from devkit.simulate import square_event, square_headers, square_kafka_message
from outbox.topics import ensure_topics, pipeline_topics
from sluice.db import create_engine, libpq_url
from sluice.logging import configure_logging
from sluice.migrate import upgrade

if TYPE_CHECKING:
    from collections.abc import Iterator

KEY = "bench-signature-key"


def fresh_database(admin_url: str) -> str:
    name = f"sluice_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(libpq_url(admin_url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = admin_url.rsplit("/", 1)[0] + f"/{name}"
    upgrade(url)
    return url


def drop_database(admin_url: str, url: str) -> None:
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(libpq_url(admin_url), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        conn.execute("CHECKPOINT")


@contextlib.contextmanager
def scratch_database(server_url: str) -> Iterator[str]:
    """A fresh, migrated database on the server, dropped afterwards whatever happens."""
    url = fresh_database(server_url)
    try:
        yield url
    finally:
        drop_database(server_url, url)


@contextlib.contextmanager
def bench_database() -> Iterator[str]:
    """A fresh migrated database for one run, dropped after it: on DATABASE_URL's server (a stock
    PostgreSQL) when it is set, else on an embedded server started for the run."""
    postgres = None
    server_url = os.environ.get("DATABASE_URL")
    try:
        if server_url is None:
            postgres = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="sluice-bench-pg-")))
            server_url = postgres.start()
        with scratch_database(server_url) as database_url:
            yield database_url
    finally:
        if postgres is not None:
            postgres.stop()


def events(count: int) -> list[dict[str, Any]]:
    """Nine bookings to one customer event; bookings get a few versions each, like real life."""
    out: list[dict[str, Any]] = []
    customers = [f"CUST{i:06d}" for i in range(max(1, count // 50))]
    for i in range(count):
        customer_id = customers[i % len(customers)]
        if i % 10 == 9:
            out.append(square_event("customer.updated", entity_id=customer_id, version=i))
        else:
            booking_id = f"bk{i % (count // 3 + 1):08d}"
            out.append(
                square_event(
                    "booking.updated", entity_id=booking_id, version=i, customer_id=customer_id
                )
            )
    return out


async def fill(bootstrap: str, topics: tuple[str, str], count: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=256_000)
    await producer.start()
    try:
        pending = []
        for event in events(count):
            message = square_kafka_message(event)
            topic = topics[0] if event["data"]["type"] == "booking" else topics[1]
            pending.append(
                await producer.send(
                    topic,
                    value=message.payload_json.encode(),
                    key=message.key.encode(),
                    headers=[(k, v.encode()) for k, v in message.headers.items()],
                )
            )
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


async def apply_rate(database_url: str, bootstrap: str, count: int, batch: int) -> float:
    """Events applied per second by the jobs consumer runtime from pre-filled topics."""
    suffix = uuid.uuid4().hex[:8]
    topics = (f"bench.bookings.{suffix}", f"bench.customers.{suffix}")
    await ensure_topics(bootstrap, topics, partitions=4)
    started = time.monotonic()
    await fill(bootstrap, topics, count)
    print(f"filled {count} events in {time.monotonic() - started:.1f} s")

    engine = create_engine(database_url, pool_size=2)
    runtime = ConsumerRuntime(
        JobsProjection(topics),
        engine,
        ConsumerConfig(
            bootstrap_servers=bootstrap,
            group_id=f"bench-{suffix}",
            batch_max=batch,
            session_timeout_ms=1000,
            rebalance_timeout_ms=1000,
        ),
    )
    task = asyncio.create_task(runtime.run())
    await runtime.assigned.wait()
    while runtime.stats.messages == 0:  # noqa: ASYNC110 - polling a counter is the point
        await asyncio.sleep(0.001)
    first = time.monotonic()
    while runtime.stats.messages < count:
        await asyncio.sleep(0.01)
        if task.done():
            task.result()
    elapsed = time.monotonic() - first
    runtime.stop()
    await task
    await engine.dispose()
    s = runtime.stats
    print(
        f"apply rate: {count / elapsed:,.0f} events/s ({count} events in {elapsed:.2f} s, "
        f"{s.batches} batches of up to {batch}; applied {s.applied}, dead-lettered "
        f"{s.dead_lettered})"
    )
    return count / elapsed


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "sluice", *args], env=env, stdout=out, stderr=out
        )


async def end_to_end(database_url: str, bootstrap: str, rate: int, seconds: int) -> None:
    await ensure_topics(bootstrap, pipeline_topics(), partitions=4)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    url = f"{base}/webhooks/square"
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "SQUARE_WEBHOOK_SIGNATURE_KEYS": KEY,
        "SQUARE_WEBHOOK_URL": url,
        "SQUARE_ENVIRONMENT": "production",  # what square_headers sends by default
        "SLUICE_KAFKA_IDEMPOTENCE": "false",
        "SLUICE_LOG_LEVEL": "warning",
        "SLUICE_LOG_FORMAT": "json",
        "SLUICE_CONSUMER_SESSION_TIMEOUT_MS": "2000",
    }
    logs = Path(tempfile.mkdtemp(prefix="sluice-bench-"))
    processes = [
        start(["serve", "--host", "127.0.0.1", "--port", str(port)], env, logs / "ingest.log"),
        start(["relay"], env, logs / "relay.log"),
        start(
            ["consume", "jobs", "--group-id", f"bench-{uuid.uuid4().hex[:8]}"], env, logs / "c.log"
        ),
    ]
    try:
        await _wait_ready(port)
        await asyncio.sleep(3)  # let the consumer join its group
        requests = signed_requests(rate * seconds, url, port)
        latencies, sent = await _drive(database_url, port, requests, rate)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(20)
    warm = sorted(latencies[len(latencies) // 10 :])  # drop the first tenth (warm-up)
    refused = sum(sent.statuses.values())
    print(
        f"end to end at {sent.accepted_per_s:.0f}/s accepted for {seconds} s, from each 2xx: "
        f"p50 {_pct(warm, 50):.1f} ms, p99 {_pct(warm, 99):.1f} ms, max {warm[-1]:.1f} ms "
        f"({len(warm)} events measured, non-2xx {refused}; logs in {logs})"
    )


def signed_requests(count: int, url: str, port: int) -> list[tuple[str, bytes]]:
    """Pre-signed booking.created deliveries, each tagged with its booking id."""
    out = []
    for _ in range(count):
        event = square_event("booking.created", event_id=str(uuid.uuid4()))
        body = json.dumps(event, separators=(",", ":")).encode()
        headers = square_headers(body, key=KEY, url=url)
        booking_id = event["data"]["id"].split(":")[0]
        out.append((booking_id, http_post(f"127.0.0.1:{port}", "/webhooks/square", body, headers)))
    return out


def _pct(sorted_values: list[float], pct: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * pct / 100))]


async def _wait_ready(port: int) -> None:
    async with httpx.AsyncClient() as client:
        for _ in range(200):
            try:
                if (await client.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError("ingest did not become ready")


async def _drive(
    database_url: str, port: int, requests: list[tuple[str, bytes]], rate: int
) -> tuple[list[float], PacedResult]:
    """Deliveries go out at `rate`/s on a few keep-alive connections; each event is timed from
    its 2xx arriving at the client to the moment a watcher first sees its jobs row in the change
    log. The watcher is woken by the change log's own NOTIFY (sent on commit), so it adds no
    polling delay and no polling load."""
    seen: dict[str, float] = {}
    started: dict[str, float] = {}  # the applying transaction's start (changed_at)
    done = asyncio.Event()

    async def watch() -> None:
        conn = await psycopg.AsyncConnection.connect(libpq_url(database_url), autocommit=True)
        async with conn:
            await conn.execute("LISTEN sluice_projection_changes")
            last_id = 0
            while not done.is_set():
                # Returns at the first notification, or after 50 ms without one.
                notifies = conn.notifies(timeout=0.05, stop_after=1)
                async for _ in notifies:
                    pass
                now = time.time()
                # One consumer applies one batch at a time, so ids commit in order; the short
                # look-back is a margin, kept small as the watcher shares the machine.
                rows = await conn.execute(
                    "SELECT id, entity_id, extract(epoch FROM changed_at) FROM projection_changes "
                    "WHERE entity = 'jobs' AND id > %s",
                    (max(0, last_id - 20),),
                )
                for change_id, booking_id, changed_at in await rows.fetchall():
                    seen.setdefault(booking_id, now)
                    started.setdefault(booking_id, float(changed_at))
                    last_id = max(last_id, change_id)

    watcher = asyncio.create_task(watch())
    sent = await asyncio.to_thread(send_paced_in_process, "127.0.0.1", port, requests, rate, 16)
    acked = sent.answered_at
    deadline = time.monotonic() + 60
    while len(seen.keys() & acked.keys()) < len(acked) and time.monotonic() < deadline:  # noqa: ASYNC110 - the watcher fills `seen`
        await asyncio.sleep(0.1)
    done.set()
    await watcher
    missing = len(acked) - len(seen.keys() & acked.keys())
    if missing:
        print(f"{missing} accepted events had no jobs row after 60 s")
    latencies = [
        (seen[b] - at) * 1000 for b, at in sorted(acked.items(), key=lambda i: i[1]) if b in seen
    ]
    conn = await psycopg.AsyncConnection.connect(libpq_url(database_url), autocommit=True)
    async with conn:
        rows = await conn.execute(
            "SELECT entity_id, extract(epoch FROM received_at) FROM inbound_events"
        )
        received = {booking_id: float(at) for booking_id, at in await rows.fetchall()}
    acking = sorted((acked[b] - at) * 1000 for b, at in received.items() if b in acked)
    print(f"  received → 2xx: p50 {_pct(acking, 50):.1f} ms, p99 {_pct(acking, 99):.1f} ms")
    to_apply = sorted((started[b] - at) * 1000 for b, at in acked.items() if b in started)
    applying = sorted((seen[b] - started[b]) * 1000 for b in acked if b in started)
    print(
        f"  2xx → applying transaction started: p50 {_pct(to_apply, 50):.1f} ms, "
        f"p99 {_pct(to_apply, 99):.1f} ms; started → visible: p50 {_pct(applying, 50):.1f} ms, "
        f"p99 {_pct(applying, 99):.1f} ms"
    )
    return latencies, sent


async def main_async(args: argparse.Namespace) -> None:
    postgres = broker = None
    database_url = os.environ.get("DATABASE_URL")
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    try:
        if database_url is None:
            postgres = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="sluice-bench-pg-")))
            database_url = postgres.start()
        if bootstrap is None:
            broker = EmbeddedBroker()
            bootstrap = broker.start()
        # The phases are separate measurements: the first one's database goes, and its dirty
        # pages are written out, so its vacuum and checkpoint do not run during the second.
        with scratch_database(database_url) as applied_to:
            await apply_rate(applied_to, bootstrap, args.events, args.batch)
        if args.rate:
            with scratch_database(database_url) as measured_on:
                await end_to_end(measured_on, bootstrap, args.rate, args.seconds)
    finally:
        if broker is not None:
            broker.stop()
        if postgres is not None:
            postgres.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--rate", type=int, default=1000, help="0 skips the end-to-end part")
    parser.add_argument("--seconds", type=int, default=10)
    args = parser.parse_args()
    configure_logging("console", "warning")
    print(f"cores: {os.cpu_count()} (figures from a shared machine are rough)")
    asyncio.run(main_async(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
