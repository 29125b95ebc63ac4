"""Reconcile benchmark: 10,000 bookings or events through the fake Square API, 100 per page.

Starts an embedded PostgreSQL (or uses DATABASE_URL) with a fresh migrated database and serves
the fake Square over real HTTP (uvicorn, in a thread of its own). Two scenarios:

- sweep (default): one `reconcile square` over the default window holding N bookings of
  `--customers` customers, made while Square's event search was off, none of them in `jobs`
  yet: the customer sweep and the booking sweep turn every one into a synthetic event with its
  outbox row. The jobs consumer's batch path applies them, then a second run finds every
  projection up to date and creates nothing.
- `--events`: the same bookings spread over the next 90 days, and their customers, made over
  the last 20 days with event search on and every delivery lost. One `reconcile square --ahead`
  records every event from SearchEvents and then sweeps customers and 92 days of bookings,
  finding nothing more to bring. The jobs consumer's batch path then applies what was recorded
  (as the pipeline would before the next run), and a second run searches from its watermark.

Both respect SQUARE_REQUESTS_PER_SECOND (20 by default): each prints its time, its requests,
and the floor that rate sets.

    python bench/reconcile_bench.py [--bookings 10000] [--customers 1000] [--events]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import uvicorn

from consumers.jobs import JobsProjection
from consumers.message import ConsumedMessage
from consumers.runtime import ConsumerConfig, ConsumerRuntime
from devkit.embedded import EmbeddedPostgres, free_port
from devkit.fakes.square import FakeSquare
from recovery.runs import default_square_window, reconcile
from sluice.db import create_engine, libpq_url
from sluice.logging import configure_logging
from sluice.migrate import upgrade
from sluice.settings import Settings

TARGET_SECONDS = 15.0


def serve_in_thread(fake: FakeSquare) -> tuple[str, uvicorn.Server]:
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(fake.app, host="127.0.0.1", port=port, log_config=None, access_log=False)
    )
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.01)
    return f"http://127.0.0.1:{port}", server


def seed(fake: FakeSquare, bookings: int, customers: int) -> None:
    start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    people = [fake.add_customer(given_name=f"C{n}") for n in range(customers)]
    for n in range(bookings):
        fake.add_booking(
            start + timedelta(seconds=n * 17 % (3 * 86400)),
            customer_id=people[n % customers]["id"],
        )


def seed_lost_events(fake: FakeSquare, bookings: int, customers: int) -> None:
    """Bookings up to 90 days ahead and their customers, made over the last 20 days with
    event search on: every one an event in Square's log that no delivery brought."""
    fake.search_enabled = True
    now = datetime.now(UTC)
    first = now - timedelta(days=20)
    step = timedelta(days=20) / (bookings + customers)
    people = [fake.add_customer(given_name=f"C{n}", at=first + n * step) for n in range(customers)]
    for n in range(bookings):
        fake.add_booking(
            now + timedelta(seconds=3600 + n * 7919 % (89 * 86400)),
            customer_id=people[n % customers]["id"],
            at=first + (customers + n) * step,
        )


async def apply_outbox(database_url: str, batch: int = 1000) -> int:
    """What the relay and the jobs consumer do before the next run: every outbox row applied
    through the consumer's own batch path, then gone from the outbox."""
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT topic, key, payload, headers FROM outbox ORDER BY id"
        ).fetchall()
        conn.execute("DELETE FROM outbox")
    messages = [
        ConsumedMessage(
            topic=topic,
            partition=0,
            offset=n,
            key=key.encode(),
            value=json.dumps(payload).encode(),
            headers=tuple((k, v.encode()) for k, v in headers.items()),
        )
        for n, (topic, key, payload, headers) in enumerate(rows)
    ]
    engine = create_engine(database_url, pool_size=1)
    try:
        config = ConsumerConfig(bootstrap_servers="unused", group_id="jobs-consumer")
        runtime = ConsumerRuntime(JobsProjection(), engine, config)
        for first in range(0, len(messages), batch):
            await runtime.apply_batch(messages[first : first + batch])
    finally:
        await engine.dispose()
    return len(messages)


async def run(settings: Settings, fake: FakeSquare, label: str, *, ahead: bool = False) -> None:
    fake.requests.clear()
    window = (
        default_square_window(ahead_days=settings.square_reconcile_ahead_days) if ahead else None
    )
    began = time.perf_counter()
    summary = (await reconcile(settings, "square", square_window=window)).as_json()
    seconds = time.perf_counter() - began
    sent = len(fake.requests)
    floor = sent / settings.square_requests_per_second
    passes = "; ".join(
        f"{name} scanned={p['scanned']} missing={p['missing']} stale={p['stale']} "
        f"recorded={p['recorded']}"
        for name, p in summary["passes"].items()
    )
    print(
        f"{label}: {seconds:6.2f} s  requests={sent} (floor at the rate limit {floor:.1f} s; "
        f"events pages={len(fake.requests_to('/v2/events')) - 1}, "
        f"bookings pages={len(fake.requests_to('/v2/bookings'))}, "
        f"customer pages={len(fake.requests_to('/v2/customers'))})  errors={len(summary['errors'])}"
    )
    print(f"  {passes}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bookings", type=int, default=10_000)
    parser.add_argument("--customers", type=int, default=1_000)
    parser.add_argument("--events", action="store_true", help="the lost-events scenario")
    args = parser.parse_args()
    configure_logging("console", "warning")

    fake = FakeSquare()
    if args.events:
        seed_lost_events(fake, args.bookings, args.customers)
    else:
        seed(fake, args.bookings, args.customers)
    square_url, server = serve_in_thread(fake)
    pg: EmbeddedPostgres | None = None
    base_url = os.environ.get("DATABASE_URL")
    with tempfile.TemporaryDirectory() as tmp:
        if base_url is None:
            pg = EmbeddedPostgres(Path(tmp) / "pg")
            pg.start()
            base_url = pg.url
        name = f"bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(libpq_url(base_url), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        url = base_url.rpartition("/")[0] + "/" + name
        upgrade(url)
        settings = Settings(
            DATABASE_URL=url,
            SQUARE_API_URL=square_url,
            SQUARE_ACCESS_TOKEN=fake.token,
        )
        try:
            print(
                f"reconcile square: {args.bookings} bookings of {args.customers} customers, "
                f"{len(fake.events)} events in Square's log, 100 per page, "
                f"rate limit {settings.square_requests_per_second:g} req/s"
            )
            ahead = args.events
            asyncio.run(run(settings, fake, "first run (all missing)", ahead=ahead))
            applied = asyncio.run(apply_outbox(url))
            print(f"the jobs consumer applied the {applied} events recorded")
            asyncio.run(run(settings, fake, "second run (nothing new)", ahead=ahead))
        finally:
            server.should_exit = True
            if pg is not None:
                pg.stop()


if __name__ == "__main__":
    main()
