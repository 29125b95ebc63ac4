"""Growth benchmark: what a store of 10,000,000 events costs, beside an empty one, in one run.

1. Two fresh databases. `full` gets `--events` Square booking events received over the past
   `--weeks` weeks, each in its weekly partition, as a store that has run that long holds them:
   its dedupe key, its jobs consumer's dedupe record (1% stale), 0.5% repeated deliveries and
   `duplicate` outcomes, 0.1% dead-lettered, ingest's per-minute answer counts, one jobs row per
   booking (ten events each), a lead per hundred events (at least 10,000), and the outbox rows
   the events had, deleted again as the relay deletes them and vacuumed. `empty` is a freshly
   migrated store with one day of the same traffic in it, and at least 100,000 events, so that
   every page and list it times is a full one.
2. The same measurements on both, `--rounds` times, each figure the median of its rounds, every
   round of reads before the first round of writes. Reads side by side: both stores' console
   pages and App API lists (the pages of bench/console_bench.py and bench/api_bench.py) are
   served at once, and each page's `--requests` requests alternate between them. Writes in
   turn, empty then full: ingest (`sluice serve` and wrk, as bench/ingest_bench.py: best of
   `--ingest-rounds` at 64 connections, and ~2,000/s offered), a relay draining `--rows`
   outbox rows (bench/relay_bench.py) and the jobs consumer's apply rate
   (bench/consumer_bench.py). A table of both and full/empty.
3. Bytes per stored event.
4. Retention: a third store gets the same weekly volume week after week for `--weeks` weeks,
   with `upkeep` at the end of each week (`--retention-days`); its size must level off.
   `--only growth` skips it; `--only retention` runs it alone.

Runs on DATABASE_URL's server (a stock PostgreSQL) when it is set, else an embedded one; on
KAFKA_BOOTSTRAP_SERVERS when set, else an embedded broker. Its databases are dropped at the end;
`--keep` keeps the empty and full stores, to look into on DATABASE_URL's server.

    python bench/growth.py [--events 10000000] [--weeks 26] [--retention-days 28]
        [--only growth|retention] [--keep]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import api_bench  # bench/ is on sys.path
import console_bench
import psycopg
from consumer_bench import apply_rate, drop_database, fresh_database
from ingest_bench import (
    PER_PHASE,
    WARMUP,
    WRK_SCRIPT,
    WrkResult,
    run_wrk,
    start_server,
    write_requests,
)
from relay_bench import PARTITIONS, drain, fill_backlog, vacuum
from sqlalchemy import text

from devkit.embedded import EmbeddedBroker, EmbeddedPostgres, free_port
from devkit.simulate import square_event, square_kafka_message
from ingest.answer_tally import KEEP_DAYS
from ingest.partitions import partitions, upkeep
from outbox.relay import RelayConfig, quiet_kafka_client_logs
from outbox.topics import ensure_topics
from schemas.event_partitions import PARTITION_DAYS, week_start
from sluice.db import autocommit, create_engine, libpq_url
from sluice.logging import configure_logging

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

WEEK = timedelta(days=PARTITION_DAYS)
DAY = timedelta(days=1)
WITHIN = 0.15  # the goal: every figure on the full store within 15% of the empty one's
# The least the empty store holds: enough that every list the benchmark times has a full page
# (the narrowest App API filters match 1 job in 100; a lead in conflict is 1 in 100), so a
# ratio compares stores, not a page of 100 rows with a page of 10.
SEED = 100_000
MIN_LEADS = 10_000
WRITERS = 2  # connections filling a store at once
CUSTOMER = "C7"  # a customer both stores have jobs of (bench/api_bench.py's ids)

# One row per event n of lo..hi, received evenly over [start, start + span): booking b gets ten
# events, the first `booking.created`. Event ids are UUIDv7 of the time received (as ingest
# makes them, sluice/ids.py) with random bits from md5 of n; provider ids are random uuids, as
# Square's are, so the indexes on them grow as a real store's do.
_SERIES = """
    SELECT n, b, pid, at,
           (lpad(to_hex((extract(epoch FROM at) * 1000)::bigint), 12, '0') || '7'
            || substr(h, 1, 3) || '8' || substr(h, 4, 15))::uuid AS id,
           CASE WHEN n %% 10 = 1 THEN 'booking.created' ELSE 'booking.updated' END AS type,
           to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS at_ms
    FROM (SELECT n, (n - 1) / 10 + 1 AS b, md5('e' || n) AS h, md5('p' || n)::uuid::text AS pid,
                 %(start)s::timestamptz
                   + make_interval(secs => %(span)s * (n - %(lo)s + 0.5) / (%(hi)s - %(lo)s + 1))
                   AS at
          FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) AS n) AS g
"""
# The body as Square sends it (spliced from templates().body), and the delivery headers ingest
# keeps (ingest/square.py).
_EVENTS = f"""
    INSERT INTO inbound_events (id, source, provider_event_id, event_type, entity_type,
        entity_id, occurred_at, received_at, body, headers, retry_number, retry_reason,
        initial_delivery_at, signature_key)
    SELECT id, 'square', pid, type, 'booking', 'bk' || b, at - interval '0.5 s', at,
           convert_to({{body}}, 'UTF8'),
           %(delivery_headers)s::jsonb || jsonb_build_object('x-square-hmacsha256-signature',
               encode(decode(md5('s' || n) || md5('t' || n), 'hex'), 'base64'),
               'square-initial-delivery-timestamp', at_ms),
           NULL, NULL, at - interval '0.5 s', '1:8254c3'
    FROM ({_SERIES}) AS s
"""  # noqa: S608 - our own fragments; values are parameters
_KEYS = f"""
    INSERT INTO event_keys (source, provider_event_id, event_id, received_at)
    SELECT 'square', pid, id, at FROM ({_SERIES}) AS s
"""  # noqa: S608
_REPEATS = f"""
    INSERT INTO delivery_repeats (event_id, received_at, headers, signature_key)
    SELECT id, at + interval '10 s',
           %(delivery_headers)s::jsonb || jsonb_build_object('square-retry-number', '1',
               'square-retry-reason', 'http_timeout', 'x-square-hmacsha256-signature',
               encode(decode(md5('s' || n) || md5('t' || n), 'hex'), 'base64'),
               'square-initial-delivery-timestamp', at_ms),
           '1:8254c3'
    FROM ({_SERIES}) AS s WHERE n %% 200 = 3
"""  # noqa: S608
# The jobs consumer's claim of every event (as console_bench.fill) and the journey's outcomes.
_DEDUPE = f"""
    INSERT INTO consumer_dedupe (consumer, event_id, applied_at, outcome, origin, topic,
        partition, "offset", entity_key, published_at, detail, received_at)
    SELECT 'jobs', id::text, at + interval '80 ms',
           CASE WHEN n %% 100 = 0 THEN 'stale' ELSE 'applied' END, 'delivered',
           'square.bookings', abs(hashtext('bk' || b)) %% 12, n, 'bk' || b,
           at + interval '20 ms',
           CASE WHEN n %% 100 = 0 THEN '{{"row_version": 9, "event_version": 1}}'::jsonb END, at
    FROM ({_SERIES}) AS s
"""  # noqa: S608
_OUTCOMES = f"""
    INSERT INTO event_outcomes (event_id, consumer, outcome, origin, topic, partition,
        "offset", entity_key, published_at, recorded_at, received_at)
    SELECT id::text, 'jobs', CASE WHEN n %% 1000 = 7 THEN 'dead_lettered' ELSE 'duplicate' END,
           'delivered', 'square.bookings', abs(hashtext('bk' || b)) %% 12, n, 'bk' || b,
           at + interval '20 ms', at + interval '90 ms', at
    FROM ({_SERIES}) AS s WHERE n %% 200 = 3 OR n %% 1000 = 7
"""  # noqa: S608
# Ingest's per-minute answer counts, for the days it keeps them (as a store that has run that
# long holds: ingest/answer_tally.py forgets the older minutes).
_ANSWERS = f"""
    INSERT INTO webhook_answers (source, reason, minute, count)
    SELECT 'square', reason, minute, count(*)
    FROM (SELECT 'accepted' AS reason, date_trunc('minute', at) AS minute FROM ({_SERIES}) AS s
          UNION ALL
          SELECT 'duplicate', date_trunc('minute', at + interval '10 s') FROM ({_SERIES}) AS s
          WHERE n %% 200 = 3) AS a
    WHERE minute > now() - make_interval(days => {KEEP_DAYS})
    GROUP BY reason, minute
    ON CONFLICT (minute, source, reason)
    DO UPDATE SET count = webhook_answers.count + excluded.count
"""  # noqa: S608
# The outbox rows the events had: written with them, then deleted once published. What they
# leave behind (the id sequence, vacuumed pages) does not depend on their content, so every row
# carries one event's envelope, of the real size.
_OUTBOX = f"""
    INSERT INTO outbox (topic, key, payload, headers, event_id, created_at)
    SELECT 'square.bookings', 'bk' || b, %(payload)s::json, %(headers)s::json, id, at
    FROM ({_SERIES}) AS s
"""  # noqa: S608
# What differs between events' bodies, as SQL on _SERIES' columns.
_FIELDS = {
    "EVID": "pid",
    "BKID": "('bk' || b)",
    "CUID": "('C' || (b %% %(customers)s))",
    "EVTYPE": "type",
    "EVAT": "at_ms",
}


@dataclass(frozen=True, slots=True)
class Templates:
    body: str  # SQL: the body spliced together from `params` and _FIELDS
    params: dict[str, str]


@functools.cache
def templates() -> Templates:
    """A booking event's body as SQL that puts in each event's own ids and time, and an outbox
    payload and headers as the relay reads them."""
    event = square_event("booking.updated", entity_id="BKID", event_id="EVID", customer_id="CUID")
    message = square_kafka_message(event)
    body = json.dumps(event, separators=(",", ":"))
    booking = event["data"]["object"]["booking"]
    for moment in (event["created_at"], booking["created_at"]):
        body = body.replace(moment, "EVAT")
    body = body.replace("booking.updated", "EVTYPE")
    pieces = re.split(f"({'|'.join(_FIELDS)})", body)
    params = {f"body{i}": piece for i, piece in enumerate(pieces) if i % 2 == 0}
    spliced = [_FIELDS[p] if i % 2 else f"%(body{i})s::text" for i, p in enumerate(pieces)]
    delivery = {
        "user-agent": "Square Connect v2",
        "content-type": "application/json",
        "square-environment": "Production",
    }
    return Templates(
        " || ".join(spliced),
        {
            **params,
            "delivery_headers": json.dumps(delivery),
            "payload": message.payload_json,
            "headers": json.dumps(message.headers, separators=(",", ":")),
        },
    )


@dataclass(frozen=True, slots=True)
class Chunk:
    """Events lo..hi (1-based), received evenly over [start, start + span)."""

    lo: int
    hi: int
    start: datetime
    span: timedelta

    def params(self, customers: int) -> dict[str, object]:
        return {
            "lo": self.lo,
            "hi": self.hi,
            "start": self.start,
            "span": self.span.total_seconds(),
            "customers": customers,
            **templates().params,
        }


def chunks(count: int, start: datetime, span: timedelta, parts: int) -> list[Chunk]:
    """`count` events over [start, start + span) in `parts` statements of equal time."""
    bounds = [count * i // parts for i in range(parts + 1)]
    return [
        Chunk(bounds[i] + 1, bounds[i + 1], start + span * i / parts, span / parts)
        for i in range(parts)
        if bounds[i + 1] > bounds[i]
    ]


def write_chunk(
    conn: psycopg.Connection[tuple[object, ...]], chunk: Chunk, customers: int, *, full: bool
) -> None:
    """One chunk's events, keys and repeats; with `full`, their journeys and outbox history."""
    params = chunk.params(customers)
    events = _EVENTS.format(body=templates().body)
    for statement in (events, _KEYS, _REPEATS, *((_DEDUPE, _OUTCOMES, _ANSWERS) if full else ())):
        conn.execute(statement, params)
    if full:
        conn.execute(_OUTBOX, params)
        # As the relay does, once published: this chunk's rows only, as another writer deleting
        # the same rows in another order would deadlock with this one.
        conn.execute(
            "DELETE FROM outbox WHERE created_at >= %(start)s"
            " AND created_at < %(start)s::timestamptz + make_interval(secs => %(span)s)",
            params,
        )
        # Autovacuum, tuned for it (migration 0002); fill() truncates the table once at the end,
        # where two writers would each wait for the other's inserts to truncate it.
        conn.execute("VACUUM (TRUNCATE false) outbox")


def write_chunks(database_url: str, parts: list[Chunk], customers: int, *, full: bool) -> None:
    """`write_chunk` on WRITERS connections at once (the server's CPU is the limit)."""

    def write(chunk: Chunk) -> None:
        with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
            write_chunk(conn, chunk, customers, full=full)

    with ThreadPoolExecutor(WRITERS) as pool:
        for _ in pool.map(write, parts):
            pass


def customers_of(events: int) -> int:
    # As bench/api_bench.py: a customer per ten jobs, a job per ten events.
    return max(1, events // 100)


async def drop_before_partition(engine: AsyncEngine) -> None:
    """A fresh store's `inbound_events_before_*` partition (empty) goes, so past weeks can be
    partitions of their own."""
    async with autocommit(engine) as conn:
        for partition in await partitions(conn):
            if partition.lower is None and partition.upper is not None:
                await conn.execute(text(f"DROP TABLE {partition.name}"))


async def past_weeks(database_url: str, now: datetime, weeks: int) -> None:
    engine = create_engine(database_url, pool_size=2)
    try:
        await drop_before_partition(engine)
        for back in range(weeks, -1, -1):
            await upkeep(engine, 0, now=now - WEEK * back)
    finally:
        await engine.dispose()


def fill(database_url: str, count: int, start: datetime, span: timedelta, parts: int) -> float:
    """The store and everything around it (see the module docstring); returns the seconds."""
    started = time.perf_counter()
    jobs = count // 10
    write_chunks(database_url, chunks(count, start, span, parts), customers_of(count), full=True)
    leads = max(MIN_LEADS, count // 100)
    api_bench.fill(database_url, jobs, leads, customers=customers_of(count))
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        # The jobs and leads logged their inserts; the change log keeps a day (pruned by the
        # API), and these are history.
        conn.execute("DELETE FROM projection_changes")
        conn.execute("VACUUM outbox")
        conn.execute("VACUUM ANALYZE")
        conn.execute("CHECKPOINT")
    return time.perf_counter() - started


_SIZES = """
    SELECT (SELECT sum(pg_total_relation_size(inhrelid)) FROM pg_inherits
            WHERE inhparent = 'inbound_events'::regclass),
           pg_total_relation_size('event_keys'), pg_total_relation_size('delivery_repeats'),
           pg_total_relation_size('consumer_dedupe'), pg_total_relation_size('event_outcomes'),
           pg_total_relation_size('jobs'), pg_total_relation_size('leads'),
           pg_total_relation_size('outbox'), pg_total_relation_size('webhook_answers'),
           pg_database_size(current_database())
"""
_SIZE_NAMES = (
    "inbound_events",
    "event_keys",
    "delivery_repeats",
    "consumer_dedupe",
    "event_outcomes",
    "jobs",
    "leads",
    "outbox",
    "webhook_answers",
    "database",
)


def sizes(database_url: str) -> dict[str, int]:
    with psycopg.connect(libpq_url(database_url)) as conn:
        row = conn.execute(_SIZES).fetchone()
    assert row is not None
    return {name: int(value or 0) for name, value in zip(_SIZE_NAMES, row, strict=True)}


def mb(size: float) -> str:
    return f"{size / 1e6:,.0f} MB" if size < 1e10 else f"{size / 1e9:,.1f} GB"


# What one store measured, by name: rates (per second, higher is better) end in "/s", the rest
# are latencies in ms.
Figures = dict[str, float]


def higher_is_better(name: str) -> bool:
    return name.endswith("/s")


def measure_ingest(database_url: str, duration: int, per_phase: int, rounds: int) -> Figures:
    workdir = Path(tempfile.mkdtemp(prefix="sluice-growth-"))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    url = f"{base}/webhooks/square"
    # Retention 0: the upkeep ingest runs at start must not age the full store.
    server = start_server(database_url, port, 2, {"SLUICE_EVENT_RETENTION_DAYS": "0"})
    try:
        script = workdir / "signed.lua"
        script.write_text(WRK_SCRIPT)
        warmup = workdir / "warmup.txt"
        write_requests(warmup, WARMUP, url)
        run_wrk(base, script, warmup, 64, 3)  # not reported
        requests = workdir / "steady.txt"
        write_requests(requests, per_phase, url)
        steady = run_wrk(base, script, requests, 60, duration, delay_ms=20)
        print(f"  ingest ~2,000/s offered: {describe(steady)}")
        best: WrkResult | None = None
        for n in range(rounds):
            requests = workdir / f"saturated-{n}.txt"
            write_requests(requests, per_phase, url)
            result = run_wrk(base, script, requests, 64, duration)
            print(f"  ingest, 64 connections: {describe(result)}", flush=True)
            if best is None or result.accepted_per_s > best.accepted_per_s:
                best = result
        assert best is not None
    finally:
        server.terminate()
        server.wait(15)
        shutil.rmtree(workdir, ignore_errors=True)
    # What ingest wrote for the relay is not the relay benchmark's: it goes, as the relay's
    # deletes and autovacuum would take it.
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        conn.execute("DELETE FROM outbox")
        conn.execute("VACUUM ANALYZE outbox")
    return {
        "ingest, 64 connections: accepted/s": best.accepted_per_s,
        "ingest, 64 connections: p99 ms": best.p99_ms,
        "ingest, ~2,000/s offered: accepted/s": steady.accepted_per_s,
        "ingest, ~2,000/s offered: p99 ms": steady.p99_ms,
    }


def describe(result: WrkResult) -> str:
    return (
        f"{result.accepted_per_s:,.0f}/s accepted, p50 {result.p50_ms:.1f} ms, "
        f"p99 {result.p99_ms:.1f} ms, non-2xx {result.non2xx + result.errors}"
    )


async def measure_relay(database_url: str, bootstrap: str, rows: int) -> float:
    topic = f"bench.growth.{uuid.uuid4().hex[:8]}"
    await ensure_topics(bootstrap, [topic], partitions=PARTITIONS)
    await asyncio.to_thread(fill_backlog, database_url, topic, rows)
    config = RelayConfig(database_url=database_url, bootstrap_servers=bootstrap, idempotence=False)
    seconds = await drain(config, rows)
    await asyncio.to_thread(vacuum, database_url)
    print(f"  relay drain: {rows:,} rows in {seconds:.2f} s = {rows / seconds:,.0f} rows/s")
    return rows / seconds


def timing_figures(kind: str, timings: list[console_bench.Timing]) -> dict[str, float]:
    figures = {f"{kind} {t.page}: p95 ms": t.p95_ms for t in timings}
    figures[f"{kind}, every page: median p50 ms"] = statistics.median(t.p50_ms for t in timings)
    figures[f"{kind}, every page: median p95 ms"] = statistics.median(t.p95_ms for t in timings)
    return figures


# What every write reads at random: dedupe keys, consumer records, the projection and the outbox.
# A store that has been receiving events keeps them in memory, touched all the time; a store
# just filled in bulk has its event bodies in the OS cache instead. Each is read into the OS
# cache (pg_prewarm's `read` mode) before measuring, unless --cold.
HOT_TABLES = ("event_keys", "consumer_dedupe", "jobs", "outbox")
_HOT_RELATIONS = """
    SELECT c.oid::regclass::text FROM pg_class c
    WHERE c.relname = ANY(%(tables)s)
       OR c.oid IN (SELECT indexrelid FROM pg_index WHERE indrelid IN (
           SELECT oid FROM pg_class WHERE relname = ANY(%(tables)s)))
"""
# Blocks this database read from outside PostgreSQL's buffers (the OS cache or disk), and the
# server's WAL: its bytes and full-page images (the first change to a page after a checkpoint
# writes the whole page; random keys in an index larger than the buffers make most changes so).
_IO = """
    SELECT d.blks_read, w.wal_bytes, w.wal_fpi FROM pg_stat_database AS d, pg_stat_wal AS w
    WHERE d.datname = current_database()
"""


@dataclass(frozen=True, slots=True)
class Io:
    blocks_read: int
    wal_bytes: int
    full_page_images: int

    def since(self, before: Io) -> str:
        return (
            f"{self.blocks_read - before.blocks_read:,} blocks read from outside shared buffers, "
            f"{mb(self.wal_bytes - before.wal_bytes)} of WAL with "
            f"{self.full_page_images - before.full_page_images:,} full-page images"
        )


def warm(conn: psycopg.Connection[tuple[object, ...]]) -> str:
    """What it did, to print."""
    try:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
    except psycopg.Error as exc:
        return f"no pg_prewarm ({exc.__class__.__name__}): measured with what the cache holds"
    relations = [r for (r,) in conn.execute(_HOT_RELATIONS, {"tables": list(HOT_TABLES)})]
    for relation in relations:
        conn.execute("SELECT pg_prewarm(%s, 'read')", (relation,))
    return f"{len(relations)} relations of {', '.join(HOT_TABLES)} read into the OS cache"


def io(database_url: str) -> Io:
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        row = conn.execute(_IO).fetchone()
        assert row is not None
        return Io(*(int(str(value)) for value in row))


def settle(label: str, database_url: str, args: argparse.Namespace) -> None:
    """Reads the hot tables in (unless --cold) and checkpoints, so that each store is measured
    from the same point of the checkpoint cycle."""
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        done = "cold: measured with what the cache holds" if args.cold else warm(conn)
        conn.execute("CHECKPOINT")  # what came before is written out, not this store's cost
    print(f"  {label}: {done}", flush=True)


async def measure_reads(
    label: str, stores: dict[str, tuple[str, int]], args: argparse.Namespace
) -> list[Figures]:
    """The console pages and App API lists of every store (label -> (URL, days)), side by side:
    each page's requests alternate between the stores. One Figures per store, in order."""
    print(f"\n== {label}: console pages and App API lists, side by side", flush=True)
    console_stores = {}
    for store, (database_url, days) in stores.items():
        settle(store, database_url, args)
        with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
            count = conn.execute("SELECT count(*) FROM inbound_events").fetchone()
            assert count is not None
            ids = console_bench.pick_ids(conn, int(count[0]))
        console_stores[store] = (database_url, ids, days)
    console = await console_bench.serve_and_measure(console_stores, args.requests)
    urls = {store: url for store, (url, _) in stores.items()}
    lists = await api_bench.serve_and_measure(urls, 100, args.requests, CUSTOMER)
    return [
        timing_figures("console", pages) | timing_figures("App API", api)
        for pages, api in zip(console, lists, strict=True)
    ]


async def measure_writes(
    label: str, database_url: str, bootstrap: str, args: argparse.Namespace
) -> Figures:
    print(f"\n== {label}: ingest, relay, consumer", flush=True)
    settle("store", database_url, args)
    before = io(database_url)
    figures = await asyncio.to_thread(
        measure_ingest, database_url, args.duration, args.per_phase, args.ingest_rounds
    )
    before = io_line("ingest", database_url, before)
    figures["relay drain: rows/s"] = await measure_relay(database_url, bootstrap, args.rows)
    before = io_line("relay", database_url, before)
    figures["consumer apply: events/s"] = await apply_rate(
        database_url, bootstrap, args.consumer_events, 1000
    )
    io_line("consumer", database_url, before)
    return figures


def io_line(phase: str, database_url: str, before: Io) -> Io:
    now = io(database_url)
    print(f"  {phase}: {now.since(before)}", flush=True)
    return now


def report(empty: Figures, full: Figures) -> list[str]:
    """Prints the table; returns the figures more than WITHIN worse on the full store."""
    worse = []
    print(f"\n{'figure':<52} {'empty':>10} {'full':>10} {'full/empty':>10}  within 15%")
    for name, before in empty.items():
        after = full[name]
        ratio = after / before
        within = ratio >= 1 - WITHIN if higher_is_better(name) else ratio <= 1 + WITHIN
        if not within:
            worse.append(name)
        number = "{:>10,.0f}" if before >= 100 else "{:>10.1f}"
        print(
            f"{name:<52} {number.format(before)} {number.format(after)} {ratio:>10.2f}  "
            f"{'yes' if within else 'NO'}"
        )
    return worse


async def measure_both(
    urls: tuple[str, str], days: tuple[int, int], args: argparse.Namespace
) -> list[str]:
    broker = None
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    try:
        if bootstrap is None:
            broker = EmbeddedBroker()
            bootstrap = broker.start()
        quiet_kafka_client_logs()
        # Each figure is the median of its rounds. The reads of both stores are measured side
        # by side, request by request; the writes take turns, round by round, so that a change
        # in the machine's speed meets both alike. Every read round comes first: the write
        # phases add events no consumer applies, which a running store does not have.
        stores = {"empty store": (urls[0], days[0]), "full store": (urls[1], days[1])}
        read_rounds = [
            await measure_reads(f"round {n + 1} of {args.rounds}", stores, args)
            for n in range(args.rounds)
        ]
        reads = [medians([r[k] for r in read_rounds]) for k in range(len(stores))]
        write_rounds: dict[str, list[Figures]] = {label: [] for label in stores}
        for n in range(args.rounds):
            for label, (url, _) in stores.items():
                where = f"{label}, round {n + 1} of {args.rounds}"
                write_rounds[label].append(await measure_writes(where, url, bootstrap, args))
        writes = [medians(figures) for figures in write_rounds.values()]
    finally:
        if broker is not None:
            broker.stop()
    return report(reads[0] | writes[0], reads[1] | writes[1])


def medians(rounds: list[Figures]) -> Figures:
    return {name: statistics.median(r[name] for r in rounds) for name in rounds[0]}


async def retention_run(admin_url: str, events: int, weeks: int, retention_days: int) -> None:
    """The same weekly volume, week after week into the future, with upkeep after each week."""
    print(f"\n== retention: {events // weeks:,} events a week for {weeks} weeks, ", end="")
    print(f"SLUICE_EVENT_RETENTION_DAYS={retention_days}")
    url = fresh_database(admin_url)
    engine = create_engine(url, pool_size=2)
    try:
        await drop_before_partition(engine)
        first = week_start(datetime.now(UTC))
        await upkeep(engine, retention_days, now=first)
        per_week = events // weeks
        customers = customers_of(events)
        totals: list[int] = []
        first_drop = None
        print(f"{'week':<12} {'store':>10} {'events':>10} {'keys':>10}  partitions kept")
        for k in range(weeks):
            start = first + WEEK * k
            week = [
                Chunk(k * per_week + c.lo, k * per_week + c.hi, c.start, c.span)
                for c in chunks(per_week, start, WEEK, WRITERS)
            ]
            await asyncio.to_thread(write_chunks, url, week, customers, full=False)
            done = await upkeep(engine, retention_days, now=start + WEEK)
            if done.dropped and first_drop is None:
                first_drop = k
            with psycopg.connect(libpq_url(url), autocommit=True) as conn:
                # A week of autovacuum: the pruned keys' and repeats' space is free again.
                conn.execute("VACUUM event_keys, delivery_repeats")
            async with autocommit(engine) as conn:
                kept = await partitions(conn)
            size = sizes(url)
            total = size["inbound_events"] + size["event_keys"]
            totals.append(total)
            with_events = [p for p in kept if p.lower is not None and p.bytes > 256 * 1024]
            span = (
                f"{with_events[0].lower:%Y-%m-%d} .. {with_events[-1].lower:%Y-%m-%d}"
                if with_events
                else "none"
            )
            print(
                f"{start:%Y-%m-%d}   {mb(total):>10} {mb(size['inbound_events']):>10} "
                f"{mb(size['event_keys']):>10}  {len(kept)} ({len(with_events)} weeks with "
                f"events: {span})",
                flush=True,
            )
        half = totals[len(totals) // 2 :]
        if first_drop is None:
            print("no week was dropped: more --weeks than the retention is needed")
        else:
            at_retention = totals[first_drop]
            print(
                f"store at the first drop (week {first_drop + 1}): {mb(at_retention)}; "
                f"largest in the last {len(half)} weeks: {mb(max(half))} "
                f"({max(half) / at_retention:.2f}x); smallest {mb(min(half))}"
            )
    finally:
        await engine.dispose()
        drop_database(admin_url, url)


def server_version(admin_url: str) -> str:
    with psycopg.connect(libpq_url(admin_url)) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    assert row is not None
    return str(row[0])


def run(admin_url: str, args: argparse.Namespace) -> int:
    if args.only != "retention":
        growth_run(admin_url, args)
    if args.only != "growth":
        asyncio.run(retention_run(admin_url, args.events, args.weeks, args.retention_days))
    return 0


def growth_run(admin_url: str, args: argparse.Namespace) -> None:
    """The empty and the full store, filled and measured."""
    now = datetime.now(UTC)
    # One day of the same traffic, or at least SEED events.
    seed = min(args.events, max(SEED, args.events // (args.weeks * PARTITION_DAYS)))
    urls: list[str] = []
    try:
        urls.extend([fresh_database(admin_url), fresh_database(admin_url)])
        empty_url, full_url = urls
        print(f"\nempty store: {seed:,} events over a day, as migrated", flush=True)
        seconds = fill(empty_url, seed, now - DAY, DAY, 1)
        print(f"  filled in {seconds:.0f} s; database {mb(sizes(empty_url)['database'])}")
        print(f"full store: {args.events:,} events over {args.weeks} weeks", flush=True)
        asyncio.run(past_weeks(full_url, now, args.weeks))
        span = WEEK * args.weeks
        seconds = fill(full_url, args.events, now - span, span, args.weeks)
        size = sizes(full_url)
        print(f"  filled in {seconds:.0f} s ({args.events / seconds:,.0f} events/s):")
        for name, value in size.items():
            print(f"    {name:<20} {mb(value):>10}")
        stored = size["inbound_events"] + size["event_keys"] + size["delivery_repeats"]
        per_event = (
            f"bytes per stored event: {stored / args.events:,.0f} (inbound_events partitions "
            f"+ event_keys + delivery_repeats); database {size['database'] / args.events:,.0f}"
        )
        print(f"  {per_event}")

        days = (1, args.weeks * PARTITION_DAYS)
        worse = asyncio.run(measure_both((empty_url, full_url), days, args))
        print(f"\n{per_event}")
        if worse:
            print(f"more than {WITHIN:.0%} worse on the full store: {', '.join(worse)}")
        else:
            print(f"every figure on the full store within {WITHIN:.0%} of the empty one's")
    finally:
        for url in urls:
            if args.keep:
                print(f"kept: {url}")
            else:
                drop_database(admin_url, url)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--weeks", type=int, default=26)
    parser.add_argument("--retention-days", type=int, default=28)
    parser.add_argument("--duration", type=int, default=10, help="seconds of each ingest phase")
    parser.add_argument("--per-phase", type=int, default=PER_PHASE, help="pre-signed requests")
    parser.add_argument("--ingest-rounds", type=int, default=2, help="phases at 64 connections")
    parser.add_argument("--rounds", type=int, default=3, help="turns of each store, for medians")
    parser.add_argument("--rows", type=int, default=100_000, help="outbox rows the relay drains")
    parser.add_argument("--consumer-events", type=int, default=50_000)
    parser.add_argument("--requests", type=int, default=100, help="per console page and list")
    parser.add_argument(
        "--only", choices=("growth", "retention"), help="one part: the two stores, or retention"
    )
    parser.add_argument("--cold", action="store_true", help="measure without reading HOT_TABLES in")
    parser.add_argument("--keep", action="store_true", help="keep the empty and full stores")
    args = parser.parse_args()
    configure_logging("console", "warning")

    postgres = None
    server_url = os.environ.get("DATABASE_URL")
    try:
        if server_url is None:
            postgres = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="sluice-growth-pg-")))
            server_url = postgres.start()
        admin_url = server_url.replace("postgresql://", "postgresql+psycopg://", 1)
        where = "embedded" if postgres else "DATABASE_URL"
        print(f"PostgreSQL {server_version(admin_url)} ({where}); cores: {os.cpu_count()}")
        return run(admin_url, args)
    finally:
        if postgres is not None:
            postgres.stop()


if __name__ == "__main__":
    sys.exit(main())
