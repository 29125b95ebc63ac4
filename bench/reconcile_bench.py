"""Reconcile benchmark: 10,000 bookings through the fake Square API, 100 per page.

Starts an embedded PostgreSQL (or uses DATABASE_URL) with a fresh migrated database, serves the
fake Square over real HTTP (uvicorn, in a thread of its own) and runs one `reconcile square`
over a window holding N bookings of N/10 customers, none of them in `jobs` yet: every booking
and customer becomes a synthetic event with its outbox row. Then a second run, which finds
every event stored and creates nothing. Prints the time of each run and the requests made.

    python bench/reconcile_bench.py [--bookings 10000] [--customers 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import uvicorn

from devkit.embedded import EmbeddedPostgres, free_port
from devkit.fakes.square import FakeSquare
from recovery.runs import reconcile
from sluice.db import libpq_url
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


async def run(settings: Settings, fake: FakeSquare, label: str) -> None:
    fake.requests.clear()
    began = time.perf_counter()
    summary = (await reconcile(settings, "square")).as_json()
    seconds = time.perf_counter() - began
    verdict = "ok" if seconds < TARGET_SECONDS else f"over the {TARGET_SECONDS:.0f} s target"
    print(
        f"{label}: {seconds:6.2f} s  requests={len(fake.requests)} "
        f"(bookings pages={len(fake.requests_to('/v2/bookings'))}, "
        f"customer lookups={len(fake.requests_to('/v2/customers'))})  "
        f"scanned={summary['scanned']} created={summary['created']} "
        f"skipped={summary['skipped']} errors={len(summary['errors'])}  [{verdict}]"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bookings", type=int, default=10_000)
    parser.add_argument("--customers", type=int, default=1_000)
    args = parser.parse_args()
    configure_logging("console", "warning")

    fake = FakeSquare()
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
                f"100 per page, rate limit {settings.square_requests_per_second:g} req/s"
            )
            asyncio.run(run(settings, fake, "first run (all missing)"))
            asyncio.run(run(settings, fake, "second run (nothing new)"))
        finally:
            server.should_exit = True
            if pg is not None:
                pg.stop()


if __name__ == "__main__":
    main()
