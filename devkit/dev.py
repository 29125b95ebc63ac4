"""`sluice dev`: the whole pipeline on one machine, on embedded services unless told otherwise.

Each component runs as its own `sluice ...` process, exactly as in production; this module starts
the embedded services, migrates, starts the components, and on Ctrl-C stops them in reverse order.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

from devkit.dev_airtable import start_dev_airtable
from devkit.dev_square import start_dev_square
from devkit.dev_state import remove_dev_env, write_dev_env
from devkit.embedded import EmbeddedBroker, EmbeddedPostgres, die_with_parent
from outbox.topics import ensure_topics, pipeline_topics
from sluice.migrate import upgrade

if TYPE_CHECKING:
    from pathlib import Path

    from sluice.settings import Settings

log = structlog.get_logger(__name__)

DEV_INFO_FILE = "dev.json"


@dataclass(frozen=True, slots=True)
class DevOptions:
    state_dir: Path
    port: int
    postgres_port: int
    kafka_port: int


def dev_components(port: int) -> list[tuple[str, list[str]]]:
    """Every long-running component, as (name, `sluice` arguments), in start order."""
    return [
        ("ingest", ["serve", "--host", "127.0.0.1", "--port", str(port)]),
        ("relay", ["relay"]),
        ("jobs-consumer", ["consume", "jobs"]),
        ("airtable-fetcher", ["consume", "airtable-fetcher"]),
        ("leads-consumer", ["consume", "leads"]),
        ("airtable-writeback", ["consume", "airtable-writeback"]),
        # The admin service and its console, then the App API, on the ports after ingest's.
        ("admin", ["admin", "--host", "127.0.0.1", "--port", str(port + 1)]),
        ("api", ["api", "--host", "127.0.0.1", "--port", str(port + 2)]),
    ]


def read_dev_info(state_dir: Path) -> dict[str, Any]:
    path = state_dir / DEV_INFO_FILE
    if not path.exists():
        return {}
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _dev_signature_key(state_dir: Path) -> str:
    return _dev_secret(state_dir, "dev-signature-key")


def _dev_secret(state_dir: Path, name: str) -> str:
    path = state_dir / name
    if not path.exists():
        path.write_text(secrets.token_urlsafe(24))
        path.chmod(0o600)
    return path.read_text().strip()


@dataclass(frozen=True, slots=True)
class _Servers:
    database_url: str
    kafka: str  # bootstrap servers


@dataclass(slots=True)
class _Running:
    """What `sluice dev` has started so far: all of it is stopped however the run ends."""

    postgres: EmbeddedPostgres | None = None
    broker: EmbeddedBroker | None = None
    processes: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)  # what the components were started with


def run_dev(settings: Settings, options: DevOptions) -> int:
    state_dir = options.state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    stopping = _stop_on_signals()
    running = _Running()
    try:
        servers = _start_servers(settings, options, state_dir, running)
        upgrade(servers.database_url)
        _ensure_topics(settings, servers.kafka)
        info = _start_components(settings, options, state_dir, servers, running)
        _wait_ready(options.port, stopping)
        _wait_consumers(servers.kafka, _consumer_groups(settings, options.port), stopping)
        (state_dir / DEV_INFO_FILE).write_text(json.dumps(info, indent=2))
        env_file = write_dev_env(state_dir, running.env)
        _print_doctor(running.env)
        names = [name for name, _ in running.processes]
        _print_banner(info, names, state_dir / DEV_INFO_FILE, env_file)
        return _supervise(running, stopping)
    finally:
        _stop(running)
        (state_dir / DEV_INFO_FILE).unlink(missing_ok=True)
        remove_dev_env(state_dir)
        print("sluice dev: stopped", file=sys.stderr)  # noqa: T201


def _stop_on_signals() -> _StopFlag:
    # A plain flag: a signal handler must not take locks the interrupted code may hold.
    stopping = _StopFlag()

    def on_signal(_signum: int, _frame: object) -> None:
        stopping.stop = True

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    return stopping


def _start_servers(
    settings: Settings, options: DevOptions, state_dir: Path, running: _Running
) -> _Servers:
    """The configured PostgreSQL and Kafka, or embedded ones where none is configured."""
    database_url = settings.database_url
    if database_url is None:
        pg_log = (state_dir / "postgres.log").open("ab")
        running.postgres = EmbeddedPostgres(state_dir / "pg", options.postgres_port, log=pg_log)
        database_url = running.postgres.start()
    kafka = settings.kafka_bootstrap_servers
    if kafka is None:
        broker_log = (state_dir / "broker.log").open("ab")
        running.broker = EmbeddedBroker(options.kafka_port, log=broker_log)
        kafka = running.broker.start()
    return _Servers(database_url, kafka)


def _start_components(
    settings: Settings, options: DevOptions, state_dir: Path, servers: _Servers, running: _Running
) -> dict[str, Any]:
    """Every component as its own process (the fake Square and Airtable first, when they are
    used); returns what `.sluice/dev.json` tells `sluice simulate` and the developer."""
    webhook_url = f"http://127.0.0.1:{options.port}/webhooks/square"
    keys = [k.get_secret_value() for k in settings.square_webhook_signature_keys]
    key = keys[0] if keys else _dev_signature_key(state_dir)
    square_url = settings.square_webhook_url or webhook_url
    env = {
        **os.environ,
        "DATABASE_URL": servers.database_url,
        "KAFKA_BOOTSTRAP_SERVERS": servers.kafka,
        "SQUARE_WEBHOOK_SIGNATURE_KEYS": ",".join(keys or [key]),
        "SQUARE_WEBHOOK_URL": square_url,
        "SQUARE_ENVIRONMENT": settings.square_environment,
    }
    if running.broker is not None:
        # The embedded broker (Tansu) has no idempotent producer support.
        env["SLUICE_KAFKA_IDEMPOTENCE"] = "false"
    square = start_dev_square(settings)
    if square.process is not None:
        running.processes.append(("square-fake-api", square.process))
    env.update(square.env)
    airtable = start_dev_airtable(settings, servers.database_url, options.port)
    if airtable.process is not None:
        running.processes.append(("airtable-fake-api", airtable.process))
    env.update(airtable.env)
    if settings.api_token is None:
        env["SLUICE_API_TOKEN"] = _dev_secret(state_dir, "dev-api-token")
    if settings.admin_token is None:
        env["SLUICE_ADMIN_TOKEN"] = _dev_secret(state_dir, "dev-admin-token")
    # Plain HTTP on localhost: the console's cookie cannot be HTTPS-only here.
    env.setdefault("SLUICE_CONSOLE_SECURE_COOKIE", "false")
    running.env = env
    for name, args in dev_components(options.port):
        process = subprocess.Popen(  # noqa: S603 - our own CLI
            [sys.executable, "-m", "sluice", *args],
            env=env,
            preexec_fn=die_with_parent,  # noqa: PLW1509 - before any thread
            start_new_session=True,
        )
        running.processes.append((name, process))
    return {
        "square_webhook_url": square_url,
        "square_signature_key": key,
        "square_environment": settings.square_environment,
        "api_url": f"http://127.0.0.1:{options.port + 2}/api",
        "api_token": env.get("SLUICE_API_TOKEN"),
        "admin_url": f"http://127.0.0.1:{options.port + 1}/admin",
        "console_url": f"http://127.0.0.1:{options.port + 1}/console/",
        "admin_token": env.get("SLUICE_ADMIN_TOKEN"),
        "database_url": servers.database_url,
        "kafka_bootstrap_servers": servers.kafka,
        **square.info,
        **airtable.info,
    }


def _consumer_groups(settings: Settings, port: int) -> list[str]:
    return [
        f"{settings.consumer_group_prefix}{args[1]}"
        for _, args in dev_components(port)
        if args[0] == "consume"
    ]


def _supervise(running: _Running, stopping: _StopFlag) -> int:
    """Until Ctrl-C (0), or until a component exits by itself (1)."""
    while not stopping.stop:
        time.sleep(0.2)
        for name, process in running.processes:
            if process.poll() is not None:
                log.error("dev.component_exited", component=name, code=process.returncode)
                return 1
    return 0


def _stop(running: _Running) -> None:
    """Components in reverse start order, each given 15 s after SIGTERM; then the servers."""
    for _, process in reversed(running.processes):
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for _, process in reversed(running.processes):
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if running.broker is not None:
        running.broker.stop()
    if running.postgres is not None:
        running.postgres.stop()


def _ensure_topics(settings: Settings, kafka: str) -> None:
    # The relay never lets the broker create topics: create them, with our partition count.
    asyncio.run(
        ensure_topics(
            kafka,
            pipeline_topics(),
            partitions=settings.topic_partitions,
            replication_factor=settings.topic_replication_factor,
        )
    )


class _StopFlag:
    stop = False


def _wait_ready(port: int, stopping: _StopFlag, timeout: float = 30) -> None:
    import httpx  # noqa: PLC0415

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not stopping.stop:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    if not stopping.stop:
        raise RuntimeError("ingest did not become ready")


def _wait_consumers(
    kafka: str, groups: list[str], stopping: _StopFlag, timeout: float = 60
) -> None:
    """Until every consumer group has joined, an event would sit in Kafka for the seconds a first
    rebalance takes: say "running" only once they have."""
    from recovery.replay_kafka import describe_group  # noqa: PLC0415

    async def all_stable() -> bool:
        for group in groups:
            state, members = await describe_group(kafka, group)
            if state != "Stable" or not members:
                return False
        return True

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not stopping.stop:
        if asyncio.run(all_stable()):
            return
        time.sleep(0.5)
    if not stopping.stop:
        log.warning("dev.consumers_not_joined", groups=groups, waited_s=timeout)


def _print_doctor(env: dict[str, str]) -> None:
    """`sluice doctor` against what the components run with, its verdicts before the banner."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", "sluice", "doctor", "--timeout", "10"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except subprocess.TimeoutExpired:
        print("sluice doctor did not finish within 60 s", flush=True)  # noqa: T201
        return
    verdict = "all checks passed" if done.returncode == 0 else "SOME CHECKS FAILED"
    print(f"\nsluice doctor: {verdict}\n{done.stdout.rstrip()}", flush=True)  # noqa: T201
    if done.stderr.strip():
        print(done.stderr.rstrip(), file=sys.stderr, flush=True)  # noqa: T201


def _print_banner(info: dict[str, Any], names: list[str], info_file: Path, env_file: Path) -> None:
    shown_db = str(info["database_url"]).rsplit("@", maxsplit=1)[-1]
    square_api = (
        f"{info['square_fake_api_url']}   (fake; token {info['square_fake_token']}, "
        "event search enabled)"
        if info.get("square_fake_api_url")
        else "as configured (SQUARE_API_URL)"
    )
    print(  # noqa: T201
        f"""
sluice dev is running ({", ".join(names)})
  Square webhook URL        {info["square_webhook_url"]}
  Square environment        {info["square_environment"]}   (SQUARE_ENVIRONMENT)
  Square signature key      {info["square_signature_key"]}   (development only)
  Square API                {square_api}
  Console                   {info["console_url"]}
    log in with the token   {info["admin_token"]}
  App API                   {info["api_url"]}   (Authorization: Bearer {info["api_token"]})
  PostgreSQL                {shown_db}
  Kafka bootstrap servers   {info["kafka_bootstrap_servers"]}
  (all of this is also in {info_file}; every other `sluice` command run in this
   directory reads this dev's settings from {env_file}: no exports needed)
  Check it all: sluice doctor

Try:  sluice simulate square booking.created   (then watch it arrive in the console)
      sluice simulate square booking.created --lost   (Square never delivers it; then
        sluice reconcile square
        finds it through Square's Events API)
      sluice simulate airtable create
Stop: Ctrl-C
""",
        flush=True,
    )
