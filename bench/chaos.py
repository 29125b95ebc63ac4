"""Chaos run: the whole pipeline as separate processes, under faults, then a check that nothing
was lost, applied twice or overwritten.

Starts an embedded PostgreSQL and broker, the fake Square and Airtable APIs, and every component
(`sluice serve`, `relay`, `consume jobs|airtable-fetcher|leads|airtable-writeback`, `api`) as its
own process. Every Square event the run makes (bookings, some days and weeks ahead, and
customers, several versions each, a few customers deleted) is first recorded in the fake Square,
Square's own truth, with event search enabled from the start. Then, for `--duration` seconds, it
sends the signed deliveries (every event three times, shuffled) and Airtable changes with their
signed pings (three times each), makes staff edits through the App API, and meanwhile:

- Square never delivers a share of its events (`LOST_SHARE`, at random, and always the whole of a
  booking weeks ahead and of a customer with no booking, and the last version of bookings staff
  edit); at the end the operator runs `sluice reconcile square --ahead`, which must bring each
  of them to its final version (or deleted) without touching what staff changed;

- SIGKILLs every component at random instants and restarts it;
- stops the broker for `--broker-outage` seconds. The embedded broker keeps everything in memory,
  so this loses every topic, message and consumer offset; after it the harness recovers as an
  operator would: consumers stopped, `sluice topics ensure`, `sluice replay store` for square
  and airtable since the lost broker started, `sluice reconcile airtable`, consumers started;
- crashes PostgreSQL (`immediate` shutdown, recovery at restart) and starts it again.

Then it waits for the pipeline to drain and prints a table; every failure count must be 0, or
the run exits 1.

    python bench/chaos.py            # the long run (7 minutes of chaos)
    python bench/chaos.py --short    # about 2 minutes, what CI runs
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import httpx
import psycopg

from api.transitions import is_allowed
from devkit.dev import dev_components
from devkit.dev_airtable import start_dev_airtable
from devkit.dev_square import start_dev_square
from devkit.embedded import EmbeddedBroker, EmbeddedPostgres, die_with_parent, free_port
from devkit.simulate import signed_square_delivery, square_event
from devkit.simulate_airtable import airtable_ping, signed_airtable_ping
from outbox.topics import ensure_topics, pipeline_topics
from sluice.db import libpq_url
from sluice.migrate import upgrade
from sluice.settings import Settings

SIGNATURE_KEY = "chaos-signature-key"
API_TOKEN = "chaos-api-token-0123456789"  # noqa: S105 - a value for this run only
PARTITIONS = 4
CONSUMERS = ("jobs-consumer", "airtable-fetcher", "leads-consumer", "airtable-writeback")
# The staff app's status walk, a cycle from `scheduled` back to it: each step is allowed from
# the one before (README, Transitions; checked against api/transitions.py at start).
# The share of Square's events it never delivers (besides the ones always lost, above).
LOST_SHARE = 0.15
STATUS_CYCLE = (
    "en_route",
    "in_progress",
    "on_hold",
    "in_progress",
    "completed",
    "in_progress",
    "on_hold",
    "cancelled",
    "scheduled",
)
LEAD_STATUSES = ("New", "Contacted", "Qualified", "Lost")


@dataclass(frozen=True, slots=True)
class Scale:
    duration: float
    bookings: int
    booking_versions: int
    customers: int
    customer_versions: int
    leads: int
    lead_changes: int
    kill_rounds: int
    drain_timeout: float


SHORT = Scale(75, 40, 3, 10, 2, 6, 3, 1, 120)
LONG = Scale(420, 400, 4, 100, 3, 40, 4, 4, 300)


def log(message: str) -> None:
    stamp = datetime.now(UTC).strftime("%H:%M:%S")
    print(f"[chaos {stamp}] {message}", flush=True)


# ---------------------------------------------------------------------------------------------
# Processes


class Component:
    """One `sluice ...` process that can be killed and started again."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.args = args
        self.env = env
        self.log_path = log_dir / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.lock = asyncio.Lock()
        self.kills = 0
        self.unexpected_exits: list[int] = []
        self._log: IO[bytes] | None = None

    def start(self) -> None:
        if self._log is None:
            self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "sluice", *self.args],
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,  # noqa: PLW1509 - no threads in the child before exec
            start_new_session=True,
        )

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.process = None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
        self.process = None

    def check_alive(self) -> None:
        """A component that exited on its own is restarted, as Kubernetes would; noted."""
        if self.process is not None and self.process.poll() is not None:
            self.unexpected_exits.append(self.process.returncode)
            log(f"{self.name} exited by itself with code {self.process.returncode}; restarting")
            self.start()


@dataclass
class Cluster:
    state_dir: Path
    postgres: EmbeddedPostgres
    broker: EmbeddedBroker
    database_url: str
    env: dict[str, str]
    components: dict[str, Component]
    ingest_url: str
    api_url: str
    airtable: dict[str, Any]
    airtable_process: subprocess.Popen[bytes] | None
    square_api_url: str
    square_process: subprocess.Popen[bytes] | None
    broker_started_at: datetime
    operator_errors: list[str] = field(default_factory=list)

    def libpq(self) -> str:
        return libpq_url(self.database_url)


def start_cluster(state_dir: Path) -> Cluster:
    pg_log = (state_dir / "postgres.log").open("ab")
    postgres = EmbeddedPostgres(state_dir / "pg", log=pg_log)
    database_url = postgres.start()
    broker = EmbeddedBroker(log=(state_dir / "broker.log").open("ab"))
    kafka = broker.start()
    broker_started_at = datetime.now(UTC)
    upgrade(database_url)
    asyncio.run(ensure_topics(kafka, pipeline_topics(), partitions=PARTITIONS))
    port = free_port()
    # The fakes, never killed: they are Square and Airtable themselves.
    settings = Settings(DATABASE_URL=database_url, SQUARE_API_URL=None)
    square = start_dev_square(settings)
    airtable = start_dev_airtable(settings, database_url, port)
    webhook_url = f"http://127.0.0.1:{port}/webhooks/square"
    env = {
        **os.environ,
        **airtable.env,
        **square.env,
        "DATABASE_URL": database_url,
        "KAFKA_BOOTSTRAP_SERVERS": kafka,
        "SQUARE_WEBHOOK_SIGNATURE_KEYS": SIGNATURE_KEY,
        "SQUARE_WEBHOOK_URL": webhook_url,
        "SQUARE_ENVIRONMENT": "production",  # what signed_square_delivery sends by default
        "SLUICE_KAFKA_IDEMPOTENCE": "false",  # the embedded broker has no idempotent producer
        "SLUICE_API_TOKEN": API_TOKEN,
        "SLUICE_LOG_FORMAT": "json",
        "SLUICE_LOG_LEVEL": "warning",
        "SLUICE_TOPIC_PARTITIONS": str(PARTITIONS),
        # Shorter waits than production, so a run recovers within its time budget.
        "SLUICE_RELAY_LEASE_SECONDS": "20",
        "SLUICE_RELAY_POLL_SECONDS": "2",
        "SLUICE_CONSUMER_RETRY_MAX_SECONDS": "3",
        "SLUICE_CONSUMER_SESSION_TIMEOUT_MS": "6000",
        "SLUICE_DB_POOL_SIZE": "4",
    }
    components = {
        name: Component(name, args, env, state_dir) for name, args in dev_components(port)
    }
    for component in components.values():
        component.start()
    return Cluster(
        state_dir=state_dir,
        postgres=postgres,
        broker=broker,
        database_url=database_url,
        env=env,
        components=components,
        ingest_url=webhook_url,
        api_url=f"http://127.0.0.1:{port + 2}/api",
        airtable=airtable.info,
        airtable_process=airtable.process,
        square_api_url=square.env["SQUARE_API_URL"],
        square_process=square.process,
        broker_started_at=broker_started_at,
    )


def stop_cluster(cluster: Cluster) -> None:
    for component in reversed(cluster.components.values()):
        component.stop()
    for fake in (cluster.airtable_process, cluster.square_process):
        if fake is not None:
            fake.terminate()
            fake.wait(10)
    cluster.broker.stop()
    cluster.postgres.stop()


# ---------------------------------------------------------------------------------------------
# What was sent and answered


@dataclass
class Ledger:
    deliveries: int = 0
    attempts: int = 0
    answered_2xx: int = 0
    refused_4xx: int = 0
    unanswered: int = 0
    # entity id -> highest version whose event got a 2xx
    booking_versions: dict[str, int] = field(default_factory=dict)
    customer_versions: dict[str, int] = field(default_factory=dict)
    # record id -> (cells after its last change, whether a ping after that change got a 2xx)
    lead_expected: dict[str, dict[str, Any]] = field(default_factory=dict)
    lead_pinged: dict[str, bool] = field(default_factory=dict)
    # staff edits answered 2xx
    job_notes: dict[str, str] = field(default_factory=dict)
    job_status: dict[str, str] = field(default_factory=dict)
    job_transitions: dict[str, int] = field(default_factory=dict)
    lead_notes: dict[str, str] = field(default_factory=dict)
    staff_calls: int = 0
    staff_2xx: int = 0
    staff_refused: list[str] = field(default_factory=list)
    uncertain_jobs: set[str] = field(default_factory=set)
    uncertain_leads: set[str] = field(default_factory=set)
    regressions: list[str] = field(default_factory=list)
    # What `reconcile square` recorded, by pass (events, customers, bookings).
    reconciled: dict[str, int] = field(default_factory=dict)
    # Jobs staff edit before others (bookings whose last version Square never delivers).
    staff_first: list[str] = field(default_factory=list)


async def post_until_answered(
    http: httpx.AsyncClient, ledger: Ledger, url: str, body: bytes, headers: dict[str, str]
) -> int | None:
    """POST like a provider does: retry on 5xx or no answer, with backoff, for up to 3 minutes."""
    delay = 0.2
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        ledger.attempts += 1
        try:
            response = await http.post(url, content=body, headers=headers)
        except httpx.HTTPError:
            pass
        else:
            if response.status_code < 500:
                return response.status_code
        await asyncio.sleep(delay * random.uniform(0.5, 1.5))
        delay = min(delay * 2, 3)
    return None


def recorded_by_pass(summary: str) -> dict[str, int]:
    """From a `sluice reconcile square` summary: the events each pass recorded."""
    try:
        passes = json.loads(summary)["passes"]
    except (ValueError, KeyError, TypeError):
        return {}
    return {name: int(tally.get("recorded", 0)) for name, tally in passes.items()}


def record_answer(ledger: Ledger, status: int | None) -> bool:
    ledger.deliveries += 1
    if status is None:
        ledger.unanswered += 1
        return False
    if 200 <= status < 300:
        ledger.answered_2xx += 1
        return True
    ledger.refused_4xx += 1
    return False


@dataclass
class SquarePlan:
    """Square's events in the order it made them, and the ones it never delivers."""

    events: list[tuple[str, str, int, dict[str, Any]]] = field(default_factory=list)
    lost: set[str] = field(default_factory=set)  # event ids
    deleted: set[str] = field(default_factory=set)  # customers Square deleted
    # Bookings whose last version is lost after earlier ones were delivered: staff edit these
    # first, so the recovered version must keep what they changed.
    staff_first: list[str] = field(default_factory=list)

    def add(self, kind: str, entity: str, version: int, event: dict[str, Any]) -> None:
        self.events.append((kind, entity, version, event))

    def lose(self, entity: str, *, last_only: bool = False) -> None:
        mine = [event for _, e, _, event in self.events if e == entity]
        for event in mine[-1:] if last_only else mine:
            self.lost.add(event["event_id"])

    def lost_entities(self) -> dict[tuple[str, str], int]:
        """Each booking and customer with a lost event, and its final version."""
        final: dict[tuple[str, str], int] = {}
        touched = set()
        for kind, entity, version, event in self.events:
            final[kind, entity] = version
            if event["event_id"] in self.lost:
                touched.add((kind, entity))
        return {key: final[key] for key in touched}


def plan_square(scale: Scale) -> SquarePlan:
    """Customers (a quarter of them never book; one of those is deleted) and bookings (half of
    them 3 to 60 days ahead), several versions each; then the events Square never delivers."""
    plan = SquarePlan()
    customers = [f"CHAOSCUST{n:05d}{uuid.uuid4().hex[:8].upper()}" for n in range(scale.customers)]
    loners = customers[-max(1, len(customers) // 4) :] if len(customers) > 1 else []
    bookers = customers[: len(customers) - len(loners)]
    for customer in customers:
        for version in range(1, scale.customer_versions + 1):
            kind = "customer.created" if version == 1 else "customer.updated"
            event = square_event(kind, entity_id=customer, version=version)
            plan.add("customer", customer, version, event)
    if loners:
        gone, version = loners[0], scale.customer_versions + 1
        plan.add(
            "customer",
            gone,
            version,
            square_event("customer.deleted", entity_id=gone, version=version),
        )
        plan.deleted.add(gone)
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    ahead: list[str] = []
    near: list[str] = []
    for n in range(scale.bookings):
        booking = f"chaosbk{n:05d}{uuid.uuid4().hex[:6]}"
        customer = random.choice(bookers)
        start_at = None
        if random.random() < 0.5:
            start_at = now + timedelta(hours=random.randint(3 * 24, 60 * 24))
            ahead.append(booking)
        else:
            near.append(booking)
        for version in range(1, scale.booking_versions + 1):
            kind = "booking.created" if version == 1 else "booking.updated"
            event = square_event(
                kind, entity_id=booking, version=version, customer_id=customer, start_at=start_at
            )
            plan.add("booking", booking, version, event)
    random.shuffle(plan.events)  # Square's order among entities; each one's versions in order
    plan.events.sort(key=lambda item: item[2])
    plan.lost = {e["event_id"] for *_, e in plan.events if random.random() < LOST_SHARE}
    # Always among them: a booking weeks ahead and a customer with no booking, whole, and the
    # last version of a few bookings staff will have edited.
    if ahead:
        plan.lose(ahead[0])
    for loner in loners[:2]:
        plan.lose(loner)
    for booking in (near or ahead)[:3]:
        plan.lose(booking, last_only=True)
        plan.staff_first.append(booking)
    return plan


async def record_at_square(cluster: Cluster, plan: SquarePlan) -> None:
    """Every event in the fake Square, in the order Square made them, before any delivery."""
    async with httpx.AsyncClient(base_url=cluster.square_api_url, timeout=10) as http:
        for *_, event in plan.events:
            (await http.post("/_fake/events", json=event)).raise_for_status()


def square_deliveries(
    plan: SquarePlan, url: str
) -> list[tuple[str, str, int, bytes, dict[str, str]]]:
    """Every event Square delivers, three times: (entity kind, id, version, body, headers),
    shuffled."""
    deliveries = []
    for kind, entity, version, event in plan.events:
        if event["event_id"] in plan.lost:
            continue
        body, headers = signed_square_delivery(event, key=SIGNATURE_KEY, url=url)
        deliveries.extend([(kind, entity, version, body, headers)] * 3)
    random.shuffle(deliveries)
    return deliveries


async def send_square(
    cluster: Cluster, scale: Scale, ledger: Ledger, deliveries: list[Any], workers: int = 6
) -> None:
    queue: asyncio.Queue[tuple[float, Any]] = asyncio.Queue()
    start = time.monotonic()
    spread = scale.duration * 0.85
    for index, delivery in enumerate(deliveries):
        queue.put_nowait((start + spread * index / len(deliveries), delivery))

    async def worker(http: httpx.AsyncClient) -> None:
        while not queue.empty():
            at, (kind, entity, version, body, headers) = queue.get_nowait()
            await asyncio.sleep(max(0.0, at - time.monotonic()))
            status = await post_until_answered(http, ledger, cluster.ingest_url, body, headers)
            if record_answer(ledger, status):
                seen = ledger.booking_versions if kind == "booking" else ledger.customer_versions
                seen[entity] = max(seen.get(entity, 0), version)

    async with httpx.AsyncClient(timeout=10) as http:
        await asyncio.gather(*(worker(http) for _ in range(workers)))


async def drive_airtable(cluster: Cluster, scale: Scale, ledger: Ledger) -> None:
    """Changes leads in the fake Airtable; after each change its signed ping, three times."""
    info = cluster.airtable
    change_url = (
        f"{info['airtable_fake_api_url']}/_fake/bases/{info['airtable_base_id']}"
        "/tables/Leads/changes"
    )
    auth = {"authorization": f"Bearer {info['airtable_fake_token']}"}
    steps = scale.leads * scale.lead_changes
    pause = scale.duration * 0.85 / steps
    records: list[str] = []
    pings: list[asyncio.Task[None]] = []

    async def ping_three_times(http: httpx.AsyncClient, touched: list[str]) -> None:
        ping = airtable_ping(info["airtable_base_id"], info["airtable_webhook_id"])
        body, headers = signed_airtable_ping(ping, info["airtable_mac"])
        for _ in range(3):
            await asyncio.sleep(random.uniform(0, 2))
            status = await post_until_answered(
                http, ledger, info["airtable_webhook_url"], body, headers
            )
            if record_answer(ledger, status):
                for record in touched:
                    ledger.lead_pinged[record] = True

    async with httpx.AsyncClient(timeout=10) as http:
        for step in range(steps):
            index = step % scale.leads
            round_ = step // scale.leads
            fields = {
                "Company": f"Company {index}-{round_}",
                "Lead Status": LEAD_STATUSES[round_ % len(LEAD_STATUSES)],
            }
            if round_ == 0:
                fields["Full Name"] = f"Lead {index}"
                fields["Email"] = f"lead{index}@example.com"
                payload: dict[str, Any] = {"action": "create", "fields": fields}
            else:
                payload = {"action": "update", "recordId": records[index], "fields": fields}
            # The fake is Airtable itself, never killed: a change there always succeeds.
            response = await http.post(change_url, json=payload, headers=auth)
            response.raise_for_status()
            record_id = response.json()["id"]
            if round_ == 0:
                records.append(record_id)
            expected = ledger.lead_expected.setdefault(record_id, {})
            expected.update(fields)
            ledger.lead_pinged[record_id] = False
            pings.append(asyncio.create_task(ping_three_times(http, [record_id])))
            await asyncio.sleep(pause)
        await asyncio.gather(*pings)


async def staff_call(
    http: httpx.AsyncClient, ledger: Ledger, method: str, path: str, body: dict[str, Any]
) -> int | None:
    """One staff change: one idempotency key, retried until the API answers below 500."""
    key = uuid.uuid4().hex
    ledger.staff_calls += 1
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            response = await http.request(
                method, path, json=body, headers={"X-Idempotency-Key": key}
            )
        except httpx.HTTPError:
            await asyncio.sleep(0.5)
            continue
        if response.status_code < 500:
            if 200 <= response.status_code < 300:
                ledger.staff_2xx += 1
            return response.status_code
        await asyncio.sleep(0.5)
    return None


async def drive_staff(cluster: Cluster, scale: Scale, ledger: Ledger, stop: asyncio.Event) -> None:
    """Staff edits through the App API while everything else goes on: job notes, status changes,
    lead notes. Every answer is recorded so the end state can be checked against it."""
    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    unsure: set[str] = set()  # jobs whose status move went unanswered
    n = 0
    async with httpx.AsyncClient(base_url=cluster.api_url, headers=headers, timeout=10) as http:
        while not stop.is_set():
            await asyncio.sleep(scale.duration / 150)
            n += 1
            # A few jobs get many edits, among them bookings Square loses a version of.
            first = [j for j in ledger.staff_first if j in ledger.booking_versions]
            others = [j for j in ledger.booking_versions if j not in ledger.staff_first]
            jobs = (first + others)[:20]
            leads = [r for r, pinged in ledger.lead_pinged.items() if pinged]
            choice = random.random()
            if choice < 0.4 and jobs:
                await edit_job_notes(http, ledger, random.choice(jobs), f"staff note {n}")
            elif choice < 0.8 and jobs:
                await move_job(http, ledger, random.choice(jobs), unsure)
            elif leads:
                await edit_lead_notes(http, ledger, random.choice(leads), f"lead note {n}")


async def edit_job_notes(http: httpx.AsyncClient, ledger: Ledger, job: str, note: str) -> None:
    body = {"notes": note, "actor": "chaos"}
    status = await staff_call(http, ledger, "PATCH", f"/jobs/{job}", body)
    if status is None:
        ledger.uncertain_jobs.add(job)
    elif status == 200:
        ledger.job_notes[job] = note
    elif status != 404:  # 404: its first event is not projected yet
        ledger.staff_refused.append(f"PATCH job {job}: {status}")


def next_status(current: str) -> str:
    """The walk's step after `current` (a status the walk reached, or `scheduled`)."""
    return STATUS_CYCLE[(STATUS_CYCLE.index(current) + 1) % len(STATUS_CYCLE)]


def check_status_cycle() -> None:
    steps = zip((STATUS_CYCLE[-1], *STATUS_CYCLE), STATUS_CYCLE, strict=False)
    refused = [f"{a} -> {b}" for a, b in steps if not is_allowed(a, b)]
    if refused:
        raise SystemExit(f"chaos: the status walk makes moves the API refuses: {refused}")


async def move_job(http: httpx.AsyncClient, ledger: Ledger, job: str, unsure: set[str]) -> None:
    if job in unsure:  # a move went unanswered: read where the job is before the next one
        try:
            response = await http.get(f"/jobs/{job}")
        except httpx.HTTPError:
            return
        if response.status_code != 200:
            return
        ledger.job_status[job] = response.json()["work_status"]
        unsure.discard(job)
    target = next_status(ledger.job_status.get(job, "scheduled"))
    body = {"ids": [job], "work_status": target, "actor": "chaos"}
    status = await staff_call(http, ledger, "POST", "/jobs/status", body)
    if status is None:
        ledger.uncertain_jobs.add(job)
        unsure.add(job)
    elif status == 200:
        ledger.job_status[job] = target
        ledger.job_transitions[job] = ledger.job_transitions.get(job, 0) + 1
    elif status != 404:
        ledger.staff_refused.append(f"status {job} -> {target}: {status}")


async def edit_lead_notes(http: httpx.AsyncClient, ledger: Ledger, lead: str, note: str) -> None:
    body = {"notes": note, "actor": "chaos"}
    status = await staff_call(http, ledger, "PATCH", f"/leads/{lead}", body)
    if status is None:
        ledger.uncertain_leads.add(lead)
    elif status == 200:
        ledger.lead_notes[lead] = note
    elif status != 404:
        ledger.staff_refused.append(f"PATCH lead {lead}: {status}")


async def watch_versions(cluster: Cluster, ledger: Ledger, stop: asyncio.Event) -> None:
    """Samples booking and lead versions: a version that goes down means an event was applied
    again over a newer one."""
    seen: dict[str, int] = {}
    while not stop.is_set():
        await asyncio.sleep(0.5)
        try:
            async with await psycopg.AsyncConnection.connect(
                cluster.libpq(), connect_timeout=2
            ) as c:
                rows = await (
                    await c.execute(
                        "SELECT 'job:' || booking_id, booking_version FROM jobs UNION ALL "
                        "SELECT 'lead:' || record_id, airtable_txn FROM leads"
                    )
                ).fetchall()
        except psycopg.Error:
            continue
        for key, version in rows:
            if version is None:
                continue
            if version < seen.get(key, 0):
                ledger.regressions.append(f"{key}: {seen[key]} -> {version}")
            seen[key] = max(seen.get(key, 0), version)


# ---------------------------------------------------------------------------------------------
# Faults


async def run_operator(cluster: Cluster, *args: str, attempts: int = 5) -> str:
    """Runs a `sluice` command as an operator would: again, a little later, if it failed.
    Returns what it printed on stdout (empty if it never succeeded)."""
    for attempt in range(1, attempts + 1):
        result = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "sluice", *args],
            env=cluster.env,
            capture_output=True,
            check=False,
            timeout=120,
        )
        if result.returncode == 0:
            return result.stdout.decode(errors="replace")
        error = result.stderr.decode(errors="replace").strip().splitlines()[-1:]
        log(f"sluice {' '.join(args)} -> {result.returncode} (attempt {attempt}): {error}")
        await asyncio.sleep(3)
    cluster.operator_errors.append(f"sluice {' '.join(args)} failed {attempts} times")
    return ""


async def broker_outage(cluster: Cluster, seconds: float) -> None:
    log(f"broker: stopped for {seconds:.0f} s (memory storage: every message and offset is lost)")
    lost_since = cluster.broker_started_at - timedelta(seconds=5)
    await asyncio.to_thread(cluster.broker.stop)
    await asyncio.sleep(seconds)
    consumers = [cluster.components[name] for name in CONSUMERS]
    for consumer in consumers:
        await consumer.lock.acquire()
    try:
        # The consumers' positions point into the lost logs: they are stopped (SIGKILL is safe:
        # effects and dedupe records commit together) and start again from the new, empty logs.
        for consumer in consumers:
            consumer.kill()
        await asyncio.to_thread(cluster.broker.start)
        cluster.broker_started_at = datetime.now(UTC)
        kafka = cluster.broker.bootstrap_servers
        await ensure_topics(kafka, pipeline_topics(), partitions=PARTITIONS)
        since = lost_since.isoformat()
        await run_operator(cluster, "replay", "store", "--source", "square", "--since", since)
        await run_operator(cluster, "replay", "store", "--source", "airtable", "--since", since)
        for consumer in consumers:
            consumer.start()
    finally:
        for consumer in consumers:
            consumer.lock.release()
    await run_operator(cluster, "reconcile", "airtable")
    log("broker: back, topics ensured, stored events replayed since the lost broker started")


async def postgres_crash(cluster: Cluster, seconds: float) -> None:
    log(f"postgres: immediate shutdown (a crash) for {seconds:.0f} s")
    await asyncio.to_thread(cluster.postgres.stop, mode="immediate")
    await asyncio.sleep(seconds)
    await asyncio.to_thread(cluster.postgres.start)
    log("postgres: back")


async def broker_then_postgres(cluster: Cluster, outage: float) -> None:
    await broker_outage(cluster, outage)
    await asyncio.sleep(random.uniform(2, 8))
    await postgres_crash(cluster, random.uniform(2, 5))


async def kill_and_restart(component: Component) -> None:
    async with component.lock:
        component.kill()
        component.kills += 1
        await asyncio.sleep(random.uniform(0.2, 3))
        component.start()


async def chaos(cluster: Cluster, scale: Scale, outage: float) -> None:
    """Every component killed `kill_rounds` times at random instants, one broker outage and one
    PostgreSQL crash, all within the run."""
    duration = scale.duration
    plan: list[tuple[float, str, Any]] = []
    plan.extend(
        (random.uniform(0.05, 0.9) * duration, "kill", component)
        for _ in range(scale.kill_rounds)
        for component in cluster.components.values()
    )
    # The PostgreSQL crash follows the broker's recovery, so the operator's steps run on a
    # database that is up (they are retried otherwise, as an operator would).
    plan.append((0.15 * duration, "broker_then_postgres", None))
    plan.sort(key=lambda item: item[0])
    start = time.monotonic()
    tasks = []
    for at, what, component in plan:
        await asyncio.sleep(max(0.0, start + at - time.monotonic()))
        if what == "kill":
            log(f"SIGKILL {component.name}")
            tasks.append(asyncio.create_task(kill_and_restart(component)))
        else:
            tasks.append(asyncio.create_task(broker_then_postgres(cluster, outage)))
    await asyncio.gather(*tasks)


async def supervise(cluster: Cluster, stop: asyncio.Event) -> None:
    while not stop.is_set():
        await asyncio.sleep(1)
        for component in cluster.components.values():
            if not component.lock.locked():
                component.check_alive()


# ---------------------------------------------------------------------------------------------
# Checks


@dataclass
class Findings:
    stored: int = 0
    lost: list[str] = field(default_factory=list)
    unrecovered: list[str] = field(default_factory=list)
    twice: list[str] = field(default_factory=list)
    overwritten: list[str] = field(default_factory=list)
    outbox: int = 0
    dead_letters: int = 0

    def clean(self) -> bool:
        return not (
            self.lost
            or self.unrecovered
            or self.twice
            or self.overwritten
            or self.outbox
            or self.dead_letters
        )


def check(cluster: Cluster, ledger: Ledger, plan: SquarePlan) -> Findings:
    found = Findings()
    with psycopg.connect(cluster.libpq(), autocommit=True, connect_timeout=5) as conn:
        found.stored = _scalar(conn, "SELECT count(*) FROM inbound_events")
        found.outbox = _scalar(conn, "SELECT count(*) FROM outbox")
        found.dead_letters = _scalar(conn, "SELECT count(*) FROM dead_letters")
        jobs = {
            row[0]: row[1:]
            for row in conn.execute(
                "SELECT booking_id, booking_version, notes, work_status,"
                " jsonb_array_length(status_history) FROM jobs"
            )
        }
        customers = {
            row[0]: row[1:]
            for row in conn.execute("SELECT customer_id, version, deleted_at FROM square_customers")
        }
        leads = {
            row[0]: row[1:]
            for row in conn.execute(
                "SELECT record_id, full_name, company, lead_status, notes FROM leads"
            )
        }
    found.lost = lost_effects(ledger, jobs, customers, leads)
    found.unrecovered = unrecovered(plan, jobs, customers)
    found.twice = applied_twice(ledger, jobs)
    found.overwritten = overwritten(ledger, jobs, leads)
    return found


Rows = dict[str, tuple[Any, ...]]


def lost_effects(ledger: Ledger, jobs: Rows, customers: Rows, leads: Rows) -> list[str]:
    """Events answered 2xx whose effect is missing: a booking or customer below the highest
    version that got a 2xx, a lead whose fields differ from Airtable's after a 2xx'd ping."""
    lost = []
    for booking, version in ledger.booking_versions.items():
        got = jobs.get(booking)
        if got is None or got[0] < version:
            lost.append(f"booking {booking} v{version}: {got and got[0]}")
    for customer, version in ledger.customer_versions.items():
        got = customers.get(customer)
        if got is None or got[0] < version:
            lost.append(f"customer {customer} v{version}: {got and got[0]}")
    for record, cells in ledger.lead_expected.items():
        row = leads.get(record)
        want = (cells.get("Full Name"), cells.get("Company"), cells.get("Lead Status"))
        if ledger.lead_pinged.get(record) and (row is None or tuple(row[:3]) != want):
            lost.append(f"lead {record}: {row and row[:3]} != {want}")
    return lost


def unrecovered(plan: SquarePlan, jobs: Rows, customers: Rows) -> list[str]:
    """Bookings and customers with an event Square never delivered that the reconcile did not
    bring to their final version (a deleted customer: marked deleted)."""
    missing = []
    for (kind, entity), version in sorted(plan.lost_entities().items()):
        row = (jobs if kind == "booking" else customers).get(entity)
        if kind == "customer" and entity in plan.deleted:
            if row is None or row[1] is None:
                missing.append(f"customer {entity} not deleted: {row}")
        elif row is None or row[0] != version:
            missing.append(f"{kind} {entity} v{version}: {row and row[0]}")
    return missing


def applied_twice(ledger: Ledger, jobs: Rows) -> list[str]:
    """`status_history` is append-only: its length must equal the status changes answered 2xx
    (a retried request reuses its idempotency key). A version seen going down means an older
    event was applied again over a newer one."""
    twice = [f"version went down: {r}" for r in ledger.regressions]
    for job, transitions in ledger.job_transitions.items():
        got = jobs.get(job)
        if job not in ledger.uncertain_jobs and got is not None and got[3] != transitions:
            twice.append(f"job {job}: {got[3]} status changes for {transitions} answered")
    return twice


def overwritten(ledger: Ledger, jobs: Rows, leads: Rows) -> list[str]:
    """Staff edits answered 2xx that are no longer there."""
    lost = []
    expected = [
        (f"job {job} notes", jobs.get(job), 1, note, job in ledger.uncertain_jobs)
        for job, note in ledger.job_notes.items()
    ]
    expected += [
        (f"job {job} work_status", jobs.get(job), 2, status, job in ledger.uncertain_jobs)
        for job, status in ledger.job_status.items()
    ]
    expected += [
        (f"lead {lead} notes", leads.get(lead), 3, note, lead in ledger.uncertain_leads)
        for lead, note in ledger.lead_notes.items()
    ]
    for what, row, column, want, uncertain in expected:
        if not uncertain and (row is None or row[column] != want):
            lost.append(f"{what}: {row and row[column]!r} != {want!r}")
    return lost


def _scalar(conn: psycopg.Connection[tuple[Any, ...]], sql: str) -> int:
    row = conn.execute(sql).fetchone()
    return int(row[0]) if row else 0


async def wait_drained(
    cluster: Cluster, ledger: Ledger, plan: SquarePlan, limit: float
) -> tuple[Findings, float]:
    start = time.monotonic()
    while True:
        try:
            found = await asyncio.to_thread(check, cluster, ledger, plan)
        except psycopg.Error:
            found = Findings(lost=["database unreachable"])
        elapsed = time.monotonic() - start
        if found.clean() or elapsed > limit:
            return found, elapsed
        for component in cluster.components.values():
            component.check_alive()
        await asyncio.sleep(1)


# ---------------------------------------------------------------------------------------------


def report(
    cluster: Cluster,
    ledger: Ledger,
    plan: SquarePlan,
    found: Findings,
    drain: float,
    drained: bool,
) -> bool:
    kills = sum(c.kills for c in cluster.components.values())
    exits = {c.name: c.unexpected_exits for c in cluster.components.values() if c.unexpected_exits}
    failures = {
        "valid deliveries refused (4xx)": ledger.refused_4xx,
        "deliveries never answered": ledger.unanswered,
        "lost (2xx answered, effect missing)": len(found.lost),
        "never delivered, not recovered by reconcile": len(found.unrecovered),
        "applied twice": len(found.twice),
        "app-owned fields overwritten": len(found.overwritten),
        "outbox rows stuck": found.outbox,
        "dead letters": found.dead_letters,
        "staff calls refused (not 404)": len(ledger.staff_refused),
        "operator commands failed": len(cluster.operator_errors),
    }
    rows: list[tuple[str, str]] = [
        ("Square events made", str(len(plan.events))),
        ("Square events never delivered", str(len(plan.lost))),
        ("bookings and customers they touch", str(len(plan.lost_entities()))),
        (
            "reconcile square --ahead recorded (by pass)",
            " / ".join(f"{name} {n}" for name, n in ledger.reconciled.items()) or "-",
        ),
        ("deliveries sent (each event 3 times)", str(ledger.deliveries)),
        ("HTTP attempts (with provider-style retries)", str(ledger.attempts)),
        ("2xx answered", str(ledger.answered_2xx)),
        ("events stored", str(found.stored)),
        ("staff edits sent / 2xx", f"{ledger.staff_calls} / {ledger.staff_2xx}"),
        ("components SIGKILLed", str(kills)),
        ("components that exited by themselves", json.dumps(exits) if exits else "0"),
        *((name, str(count)) for name, count in failures.items()),
        ("time to drain", f"{drain:.1f} s" + ("" if drained else " (NOT drained)")),
    ]
    width = max(len(name) for name, _ in rows)
    print()
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    for title, items in (
        ("lost", found.lost),
        ("not recovered", found.unrecovered),
        ("applied twice", found.twice),
        ("overwritten", found.overwritten),
        ("staff refused", ledger.staff_refused),
        ("operator errors", cluster.operator_errors),
    ):
        for item in items[:10]:
            print(f"  {title}: {item}")
    ok = drained and not any(failures.values())
    print(f"\nchaos run {'PASSED' if ok else 'FAILED'}; logs in {cluster.state_dir}", flush=True)
    return ok


async def run(cluster: Cluster, scale: Scale, outage: float) -> bool:
    stop = asyncio.Event()
    plan = plan_square(scale)
    ledger = Ledger(staff_first=plan.staff_first)
    await record_at_square(cluster, plan)
    deliveries = square_deliveries(plan, cluster.ingest_url)
    background = [
        asyncio.create_task(supervise(cluster, stop)),
        asyncio.create_task(watch_versions(cluster, ledger, stop)),
        asyncio.create_task(drive_staff(cluster, scale, ledger, stop)),
    ]
    started = time.monotonic()
    await asyncio.gather(
        send_square(cluster, scale, ledger, deliveries),
        drive_airtable(cluster, scale, ledger),
        chaos(cluster, scale, outage),
    )
    stop.set()
    await asyncio.gather(*background)
    log(f"load and faults done after {time.monotonic() - started:.0f} s")
    # As an operator would after Square's retries ran out: the nightly reconcile, run now.
    log(f"Square never delivered {len(plan.lost)} events: sluice reconcile square --ahead")
    summary = await run_operator(cluster, "reconcile", "square", "--ahead")
    ledger.reconciled = recorded_by_pass(summary)
    log("waiting for the drain")
    found, drain = await wait_drained(cluster, ledger, plan, scale.drain_timeout)
    return report(cluster, ledger, plan, found, drain, drain <= scale.drain_timeout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--short", action="store_true", help="the CI run: about 2 minutes")
    parser.add_argument("--duration", type=float, help="seconds of load and faults")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the event counts")
    parser.add_argument("--broker-outage", type=float, default=30, help="seconds")
    parser.add_argument("--seed", type=int, help="random seed (printed when not given)")
    parser.add_argument("--state-dir", type=Path, help="keeps logs and data here")
    options = parser.parse_args()
    check_status_cycle()
    seed = options.seed if options.seed is not None else random.randrange(1 << 30)
    random.seed(seed)
    base = SHORT if options.short else LONG
    scale = Scale(
        duration=options.duration or base.duration,
        bookings=max(1, int(base.bookings * options.scale)),
        booking_versions=base.booking_versions,
        customers=max(1, int(base.customers * options.scale)),
        customer_versions=base.customer_versions,
        leads=max(1, int(base.leads * options.scale)),
        lead_changes=base.lead_changes,
        kill_rounds=base.kill_rounds,
        drain_timeout=base.drain_timeout,
    )
    state_dir = options.state_dir or Path(tempfile.mkdtemp(prefix="sluice-chaos-"))
    state_dir.mkdir(parents=True, exist_ok=True)
    log(f"seed {seed}; {scale}; state in {state_dir}")
    cluster = start_cluster(state_dir)
    try:
        ok = asyncio.run(run(cluster, scale, options.broker_outage))
    finally:
        stop_cluster(cluster)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
