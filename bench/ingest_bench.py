"""Ingest benchmark: signed Square deliveries against `sluice serve`, compared with pgbench.

Starts an embedded PostgreSQL (or uses DATABASE_URL), a fresh database, and `sluice serve`; drives
it with wrk (a C load generator, so it is not the bottleneck) cycling through pre-signed requests
with distinct event ids: a short warm-up (not reported), then latency at a fixed ~2,000/s, then
throughput at rising concurrency; then pgbench on the same database with a transaction doing the
same two inserts.

    python bench/ingest_bench.py [--duration 10] [--connections 16,64,128]

Needs `wrk` on PATH (Debian/Ubuntu: apt-get install wrk).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import psycopg

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
    def accepted_per_s(self) -> float:
        return (self.requests - self.non2xx) / self.seconds


def write_requests(path: Path, count: int, url: str) -> int:
    body_len = 0
    with path.open("w") as out:
        for _ in range(count):
            event = square_event("booking.created", event_id=str(uuid.uuid4()))
            body = json.dumps(event, separators=(",", ":")).encode()
            body_len = len(body)
            out.write(f"{square_signature(KEY, url, body)} {body.decode()}\n")
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


def start_server(
    database_url: str, port: int, workers: int, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """`sluice serve` on `port`, taking this module's pre-signed Square deliveries, once it
    answers /readyz; `env` adds to or overrides its environment."""
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sluice",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(workers),
        ],
        env={
            **os.environ,
            "DATABASE_URL": database_url,
            "SQUARE_WEBHOOK_SIGNATURE_KEYS": KEY,
            "SQUARE_WEBHOOK_URL": f"{base}/webhooks/square",
            "SQUARE_ENVIRONMENT": "production",  # the deliveries say Production
            "SLUICE_LOG_LEVEL": "warning",
            **(env or {}),
        },
    )
    for _ in range(100):
        try:
            if httpx.get(f"{base}/readyz").status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    return server


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", default="16,64,128")
    parser.add_argument("--per-phase", type=int, default=80_000, help="pre-signed requests")
    parser.add_argument("--pgbench-clients", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2, help="`sluice serve --workers`")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (apt-get install wrk)")

    workdir = Path(tempfile.mkdtemp(prefix="sluice-bench-"))
    postgres: EmbeddedPostgres | None = None
    admin_url = os.environ.get("DATABASE_URL")
    if admin_url is None:
        postgres = EmbeddedPostgres(workdir / "pg")
        admin_url = postgres.start()
    libpq = libpq_url(admin_url)
    name = f"sluice_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(libpq, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    db_url = admin_url.rsplit("/", 1)[0] + f"/{name}"
    upgrade(db_url)

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    webhook_url = f"{base}/webhooks/square"
    server = start_server(db_url, port, args.workers)
    try:
        script = workdir / "signed.lua"
        script.write_text(WRK_SCRIPT)
        # Warm-up, not reported: first connections, prepared statements, caches.
        warmup = workdir / "requests-warmup.txt"
        write_requests(warmup, 20_000, webhook_url)
        run_wrk(base, script, warmup, 64, 3)

        # About 2,000/s: 60 connections, each pausing 20 ms after each answer.
        requests = workdir / "requests-steady.txt"
        write_requests(requests, args.per_phase, webhook_url)
        steady = run_wrk(base, script, requests, 60, args.duration, delay_ms=20)
        print(
            f"steady load: {steady.accepted_per_s:.0f}/s accepted, p50 {steady.p50_ms:.1f} ms, "
            f"p99 {steady.p99_ms:.1f} ms, non-2xx {steady.non2xx + steady.errors}"
        )

        print()
        print(f"{'connections':>11} {'accepted/s':>11} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8}")
        results = []
        body_len = 0
        for connections in [int(c) for c in args.connections.split(",")]:
            requests = workdir / f"requests-{connections}.txt"
            body_len = write_requests(requests, args.per_phase, webhook_url)
            result = run_wrk(base, script, requests, connections, args.duration)
            results.append(result)
            print(
                f"{connections:>11} {result.accepted_per_s:>11.0f} {result.p50_ms:>8.1f} "
                f"{result.p99_ms:>8.1f} {result.non2xx + result.errors:>8}",
                flush=True,
            )

        with psycopg.connect(libpq.rsplit("/", 1)[0] + f"/{name}") as conn:
            row = conn.execute(
                "SELECT (SELECT count(*) FROM inbound_events), (SELECT count(*) FROM outbox)"
            ).fetchone()
        assert row is not None
        print(f"stored: {row[0]} events, {row[1]} outbox rows")

        pgbench = postgres.pgbench() if postgres else (shutil.which("pgbench") or "pgbench")
        tps = run_pgbench(
            pgbench,
            libpq.rsplit("/", 1)[0] + f"/{name}",
            args.pgbench_clients,
            args.duration,
            body_len,
            workdir,
        )
        best = max(results, key=lambda r: r.accepted_per_s)
        print(f"pgbench, same two inserts, {args.pgbench_clients} clients: {tps:.0f} tps")
        print(
            f"best sluice: {best.accepted_per_s:.0f}/s at {best.connections} connections = "
            f"{100 * best.accepted_per_s / tps:.0f}% of pgbench"
        )
    finally:
        server.terminate()
        server.wait(15)
        if postgres is not None:
            postgres.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
