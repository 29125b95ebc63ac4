"""Console benchmark: the overview, the events list with each filter, and an event's page, over a
store of a million events with their journeys.

Fills a fresh database in bulk (SQL generate_series): `--events` Square events received over the
last `--days` days, each with its dedupe record (applied; 1% stale), 0.5% repeated deliveries with
a `duplicate` outcome, 0.1% dead-lettered, one jobs row per booking (ten events each), and
ingest's per-minute answer counts for all of them. Then
serves `sluice admin` in this process and times each page from a client over loopback, one
request at a time: p50 and p95 of `--requests` requests after a warm-up.

Runs against DATABASE_URL (a stock PostgreSQL) when it is set, else an embedded one.

    python bench/console_bench.py [--events 1000000] [--days 30] [--requests 40]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx
import psycopg
import uvicorn
from consumer_bench import bench_database  # bench/ is on sys.path

from devkit.embedded import free_port
from devkit.simulate import square_event
from recovery.admin import create_admin_app
from sluice.db import libpq_url
from sluice.logging import configure_logging
from sluice.settings import Settings

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

TOKEN = "bench-admin-token"  # noqa: S105
TARGET_P95_MS = 150.0


def fill(database_url: str, count: int, days: int) -> dict[str, str]:
    """The store, its journeys and projections; returns ids that the filters look for."""
    template = json.dumps(square_event("booking.updated", entity_id="BKID", event_id="EVID"))
    spread = days * 86_400.0
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        started = time.perf_counter()
        conn.execute(
            """
            INSERT INTO inbound_events (id, source, provider_event_id, event_type, entity_type,
                entity_id, occurred_at, received_at, body, headers, retry_number)
            SELECT md5('e' || n)::uuid, 'square', 'ev-' || n, 'booking.updated', 'booking',
                   'bk' || (n / 10), at, at,
                   convert_to(replace(replace(%(t)s, 'EVID', 'ev-' || n), 'BKID', 'bk' || (n / 10)),
                              'UTF8'),
                   '{"square-retry-number": "0"}', NULL
            FROM (SELECT n, now() - make_interval(secs => %(spread)s * (%(count)s - n) / %(count)s)
                  AS at FROM generate_series(1, %(count)s) AS n) AS g
            """,
            {"t": template, "count": count, "spread": spread},
        )
        conn.execute(
            "INSERT INTO event_keys (source, provider_event_id, event_id, received_at)"
            " SELECT source, provider_event_id, id, received_at FROM inbound_events"
        )
        conn.execute(
            """
            INSERT INTO consumer_dedupe (consumer, event_id, applied_at, outcome, origin, topic,
                partition, "offset", entity_key, published_at, detail, received_at)
            SELECT 'jobs', id::text, received_at, CASE WHEN n % 100 = 0 THEN 'stale' ELSE 'applied'
                   END, 'delivered', 'square.bookings', n % 12, n, entity_id, received_at,
                   CASE WHEN n % 100 = 0 THEN '{"row_version": 9, "event_version": 1}'::jsonb END,
                   received_at
            FROM (SELECT id, entity_id, received_at,
                         row_number() OVER (ORDER BY received_at) AS n FROM inbound_events) AS e
            """
        )
        conn.execute(
            """
            INSERT INTO event_outcomes (event_id, consumer, outcome, origin, topic, partition,
                "offset", entity_key, published_at, recorded_at, received_at)
            SELECT id::text, 'jobs', CASE WHEN n % 1000 = 7 THEN 'dead_lettered' ELSE 'duplicate'
                   END, 'delivered', 'square.bookings', n % 12, n, entity_id, received_at,
                   received_at, received_at
            FROM (SELECT id, entity_id, received_at,
                         row_number() OVER (ORDER BY received_at) AS n FROM inbound_events) AS e
            WHERE n % 200 = 3 OR n % 1000 = 7
            """
        )
        conn.execute(
            """
            INSERT INTO delivery_repeats (event_id, received_at, headers)
            SELECT id, received_at + interval '1 minute', '{"square-retry-number": "1"}'
            FROM inbound_events WHERE provider_event_id LIKE '%%3' AND random() < 0.05
            """
        )
        conn.execute(
            """
            INSERT INTO webhook_answers (source, reason, minute, count)
            SELECT 'square', 'accepted', date_trunc('minute', received_at), count(*)
            FROM inbound_events GROUP BY 3
            UNION ALL
            SELECT 'square', 'duplicate', date_trunc('minute', r.received_at), count(*)
            FROM delivery_repeats r GROUP BY 3
            """
        )
        conn.execute(
            """
            INSERT INTO jobs (booking_id, status, start_at, duration_minutes, booking_version,
                              source_updated_at)
            SELECT DISTINCT ON (entity_id) entity_id, 'ACCEPTED', received_at, 60, 9, received_at
            FROM inbound_events ORDER BY entity_id, received_at DESC
            """
        )
        conn.execute("VACUUM ANALYZE")
        size = conn.execute("SELECT pg_size_pretty(pg_database_size(current_database()))")
        print(f"filled {count:,} events in {time.perf_counter() - started:.0f} s; "
              f"database {size.fetchone()[0]}")  # type: ignore[index]  # fmt: skip
        return pick_ids(conn, count)


def pick_ids(conn: psycopg.Connection[Any], count: int) -> dict[str, str]:
    """Ids the filters look for in a store of `count` Square events (read in the order of the
    store's (source, received_at) index): a recent event, and the provider id, entity and keyset
    cursor of the one half-way."""
    picks = conn.execute(
        """
        SELECT (SELECT id::text FROM inbound_events WHERE source = 'square'
                ORDER BY received_at DESC LIMIT 1 OFFSET 500),
               (SELECT provider_event_id FROM inbound_events WHERE source = 'square'
                ORDER BY received_at LIMIT 1 OFFSET %(middle)s),
               (SELECT entity_id FROM inbound_events WHERE source = 'square'
                ORDER BY received_at LIMIT 1 OFFSET %(middle)s),
               (SELECT received_at || '_' || id FROM inbound_events WHERE source = 'square'
                ORDER BY received_at LIMIT 1 OFFSET %(middle)s)
        """,
        {"middle": count // 2},
    ).fetchone()
    assert picks is not None
    return {
        "event": picks[0],
        "provider_event_id": picks[1],
        "entity": picks[2],
        "middle": picks[3].replace(" ", "T").replace("+00", "+00:00"),
    }


def pages(ids: dict[str, str], days: int) -> list[tuple[str, str]]:
    since = time.strftime("%Y-%m-%dT%H:%M", time.gmtime(time.time() - days * 86_400 / 2))
    until = time.strftime("%Y-%m-%dT%H:%M", time.gmtime(time.time() - days * 86_400 / 3))
    return [
        ("overview", "/"),
        ("events, no filter", "/events"),
        ("events, source", "/events?source=square"),
        ("events, a page half-way", f"/events?after={quote(ids['middle'])}"),
        ("events, type", "/events?type=booking.updated"),
        ("events, entity", f"/events?entity={ids['entity']}"),
        ("events, provider id", f"/events?provider_event_id={ids['provider_event_id']}"),
        ("events, time range", f"/events?since={since}&until={until}"),
        ("events, applied", "/events?outcome=applied"),
        ("events, stale", "/events?outcome=stale"),
        ("events, duplicate", "/events?outcome=duplicate"),
        ("events, dead-lettered", "/events?outcome=dead_lettered"),
        ("events, ignored (none)", "/events?outcome=ignored&source=square"),
        ("event page", f"/events/{ids['event']}"),
        ("event page, by provider id", f"/events/{ids['provider_event_id']}"),
    ]


@dataclass(frozen=True, slots=True)
class Timing:
    page: str
    p50_ms: float
    p95_ms: float
    max_ms: float


@dataclass(frozen=True, slots=True)
class Store:
    """A served app and the paths to time on it: (page name, path), the same names in the same
    order on every store measured side by side."""

    label: str
    base: str
    paths: list[tuple[str, str]]


async def measure(
    stores: list[Store], requests: int, *, headers: dict[str, str]
) -> list[list[Timing]]:
    """Each store's p50, p95 and max of each page over `requests` requests after a warm-up, one
    request at a time, printed as they come. With several stores, each page's requests alternate
    between them (in turn, the order reversed each time), so that a change in the machine's
    speed meets every store alike and their ratio is measured side by side."""
    timings: list[list[Timing]] = [[] for _ in stores]
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(
                httpx.AsyncClient(base_url=store.base, headers=headers, timeout=60)
            )
            for store in stores
        ]
        columns = "".join(f" {f'{s.label} p50':>14} {'p95':>6} {'max':>6}" for s in stores)
        print(f"{'page':<34}{columns}  (ms)")
        for n, name in enumerate(name for name, _ in stores[0].paths):
            paths = [store.paths[n][1] for store in stores]
            for client, path in zip(clients, paths, strict=True):
                for _ in range(3):
                    answer = await client.get(path)
                    assert answer.status_code == 200, (path, answer.status_code, answer.text[:300])
            times: list[list[float]] = [[] for _ in stores]
            for turn in range(requests):
                order = range(len(stores)) if turn % 2 == 0 else reversed(range(len(stores)))
                for k in order:
                    started = time.perf_counter()
                    answer = await clients[k].get(paths[k])
                    times[k].append((time.perf_counter() - started) * 1000)
                    assert answer.status_code == 200
            line = f"{name:<34}"
            for k, samples in enumerate(times):
                p95 = statistics.quantiles(samples, n=20, method="inclusive")[18]
                timing = Timing(name, statistics.median(samples), p95, max(samples))
                timings[k].append(timing)
                line += f" {timing.p50_ms:14.1f} {timing.p95_ms:6.1f} {timing.max_ms:6.1f}"
            print(line, flush=True)
    return timings


def all_under(timings: list[Timing], target_ms: float) -> bool:
    return all(t.p95_ms < target_ms for t in timings)


@contextlib.asynccontextmanager
async def served(app: Any) -> AsyncIterator[str]:  # noqa: ANN401 - any ASGI app
    """`app` on uvicorn in this process, on a free port; its base URL."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()  # it failed to start: say why
        await asyncio.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def serve_and_measure(
    stores: dict[str, tuple[str, dict[str, str], int]], requests: int
) -> list[list[Timing]]:
    """The console of each store, label -> (database URL, its ids, its days), served at once and
    measured side by side."""
    async with contextlib.AsyncExitStack() as stack:
        served_stores = []
        for label, (database_url, ids, days) in stores.items():
            settings = Settings(DATABASE_URL=database_url, SLUICE_ADMIN_TOKEN=TOKEN)
            url = await stack.enter_async_context(served(create_admin_app(settings)))
            served_stores.append(Store(label, f"{url}/console", pages(ids, days)))
        return await measure(served_stores, requests, headers={"Authorization": f"Bearer {TOKEN}"})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--requests", type=int, default=40)
    args = parser.parse_args()
    configure_logging("console", "warning")
    print(f"cores: {os.cpu_count()} (figures from a shared machine are rough)")
    with bench_database() as database_url:
        ids = fill(database_url, args.events, args.days)
        stores = {"store": (database_url, ids, args.days)}
        [timings] = asyncio.run(serve_and_measure(stores, args.requests))
    met = all_under(timings, TARGET_P95_MS)
    print(f"target p95 < {TARGET_P95_MS:.0f} ms on every page: {'met' if met else 'NOT met'}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
