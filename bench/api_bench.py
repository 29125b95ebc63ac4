"""App API list benchmark: pages of jobs and leads over a million jobs.

Fills a fresh database in bulk (SQL generate_series): `--jobs` jobs starting over the next 90
days, spread over 20 locations, 50 team members, 100,000 customers and every Square and work
status, and `--leads` leads (a tenth claimed, a twentieth failed to sync, a hundredth in
conflict). Then serves `sluice api` in this process and times each list from a client over
loopback, one request at a time: the first page, a page a cursor reaches half-way through,
and each filter: p50 and p95 of `--requests` requests after a warm-up.

Runs against DATABASE_URL (a stock PostgreSQL) when it is set, else an embedded one.

    python bench/api_bench.py [--jobs 1000000] [--leads 100000] [--limit 100] [--requests 40]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time

import httpx
import psycopg
from console_bench import Store, Timing, all_under, measure, served  # bench/ is on sys.path
from consumer_bench import bench_database

from api.app import create_api_app
from sluice.db import libpq_url
from sluice.logging import configure_logging
from sluice.settings import Settings

TOKEN = "bench-api-token-0123456789"  # noqa: S105
TARGET_P95_MS = 50.0


def fill(database_url: str, jobs: int, leads: int, customers: int = 100_000) -> None:
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        started = time.perf_counter()
        conn.execute(
            """
            INSERT INTO jobs (booking_id, status, start_at, duration_minutes, team_member_id,
                location_id, customer_id, customer_name, booking_version, work_status,
                service_variation_ids)
            SELECT 'bk' || n,
                   (ARRAY['ACCEPTED', 'PENDING', 'CANCELLED_BY_CUSTOMER', 'NO_SHOW'])[1 + n %% 4],
                   now() + make_interval(secs => 90 * 86400.0 * n / %(jobs)s), 60,
                   'TM' || (n %% 50), 'L' || (n %% 20), 'C' || (n %% %(customers)s),
                   'Customer ' || n, 1,
                   (ARRAY['scheduled', 'en_route', 'in_progress', 'completed'])[1 + n %% 4],
                   '["SV1"]'
            FROM generate_series(1, %(jobs)s) AS n
            """,
            {"jobs": jobs, "customers": customers},
        )
        conn.execute(
            """
            INSERT INTO leads (record_id, base_id, table_id, full_name, email, airtable_txn,
                claimed_by, lead_status)
            SELECT 'rec' || lpad(n::text, 14, '0'), 'appBENCH', 'tblBENCH', 'Lead ' || n,
                   'lead' || n || '@example.com', 1,
                   CASE WHEN n %% 10 = 0 THEN 'staff' || (n %% 7) END,
                   (ARRAY['New', 'Contacted', 'Qualified', 'Won'])[1 + n %% 4]
            FROM generate_series(1, %(leads)s) AS n
            """,
            {"leads": leads},
        )
        conn.execute(
            """
            INSERT INTO lead_sync (record_id, status)
            SELECT 'rec' || lpad(n::text, 14, '0'),
                   CASE WHEN n %% 20 = 0 THEN 'failed' WHEN n %% 100 = 1 THEN 'conflict'
                        ELSE 'synced' END
            FROM generate_series(1, %(leads)s) AS n
            """,
            {"leads": leads},
        )
        conn.execute(
            """
            INSERT INTO sync_conflicts (record_id, column_name, app_changed_at, airtable_changed_at)
            SELECT 'rec' || lpad(n::text, 14, '0'), 'notes', now(), now()
            FROM generate_series(1, %(leads)s) AS n WHERE n %% 100 = 1
            """,
            {"leads": leads},
        )
        conn.execute("VACUUM ANALYZE jobs, leads, lead_sync, sync_conflicts")
        print(f"filled {jobs:,} jobs and {leads:,} leads in {time.perf_counter() - started:.0f} s")


async def next_of(base: str, path: str) -> str:
    """The `next` link of a page: a cursor as deep in the list as that page."""
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=base, headers=auth) as client:
        link: str = (await client.get(path)).json()["next"]
    return link


def pages(limit: int, middle_day: str, customer: str = "C4242") -> list[tuple[str, str]]:
    page = f"limit={limit}"
    return [
        ("jobs, first page", f"/api/jobs?{page}"),
        ("jobs, from half-way (45 days on)", f"/api/jobs?{page}&from={middle_day}"),
        ("jobs, a day", f"/api/jobs?{page}&from={middle_day}&to={middle_day}T23:59:59Z"),
        ("jobs, location", f"/api/jobs?{page}&location=L7"),
        ("jobs, status", f"/api/jobs?{page}&status=NO_SHOW"),
        ("jobs, work status", f"/api/jobs?{page}&work_status=completed"),
        ("jobs, team member", f"/api/jobs?{page}&team_member=TM13"),
        ("jobs, customer", f"/api/jobs?{page}&customer={customer}"),
        ("jobs, location and team member", f"/api/jobs?{page}&location=L3&team_member=TM3"),
        ("leads, first page", f"/api/leads?{page}"),
        ("leads, claimed by", f"/api/leads?{page}&claimed_by=staff3"),
        ("leads, lead status", f"/api/leads?{page}&lead_status=Won"),
        ("leads, sync failed", f"/api/leads?{page}&sync_status=failed"),
        ("leads, in conflict", f"/api/leads?{page}&conflict=true"),
    ]


async def serve_and_measure(
    database_urls: dict[str, str], limit: int, requests: int, customer: str = "C4242"
) -> list[list[Timing]]:
    """The App API of each store (label -> database URL), served at once and measured side by
    side."""
    middle_day = time.strftime("%Y-%m-%d", time.gmtime(time.time() + 45 * 86_400))
    async with contextlib.AsyncExitStack() as stack:
        stores = []
        for label, database_url in database_urls.items():
            settings = Settings(DATABASE_URL=database_url, SLUICE_API_TOKEN=TOKEN)
            url = await stack.enter_async_context(served(create_api_app(settings)))
            paths = pages(limit, middle_day, customer)
            # The next page of a half-way page: a cursor deep in the list.
            deep = await next_of(url, paths[1][1])
            paths.insert(2, ("jobs, the page a cursor reaches", deep))
            stores.append(Store(label, url, paths))
        return await measure(stores, requests, headers={"Authorization": f"Bearer {TOKEN}"})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--leads", type=int, default=100_000)
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--requests", type=int, default=40)
    args = parser.parse_args()
    configure_logging("console", "warning")
    print(f"cores: {os.cpu_count()} (figures from a shared machine are rough)")
    with bench_database() as database_url:
        fill(database_url, args.jobs, args.leads)
        stores = {"store": database_url}
        [timings] = asyncio.run(serve_and_measure(stores, args.limit, args.requests))
    met = all_under(timings, TARGET_P95_MS)
    print(f"target p95 < {TARGET_P95_MS:.0f} ms on every list: {'met' if met else 'NOT met'}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
