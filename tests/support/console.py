"""The pipeline as the console tests drive it: ingest, the relay, the jobs consumer and the admin
service with its console, all real, served from one background thread's event loop (a browser
test's own code is synchronous), against the test's database and the session's broker."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from consumers.jobs import JobsProjection
from consumers.runtime import ConsumerConfig
from devkit.simulate import signed_square_delivery
from ingest.app import create_app
from outbox.relay import Relay, RelayConfig
from outbox.topics import ensure_topics, pipeline_topics
from recovery.admin import create_admin_app
from sluice.db import create_engine
from sluice.settings import Settings
from tests.support.pipeline import running
from tests.support.services import running_server
from tests.support.square import ROTATED_KEY, SIGNATURE_KEY, WEBHOOK_URL

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

ADMIN_TOKEN = "console-admin-token-for-tests"  # noqa: S105


def console_settings(database_url: str, bootstrap: str) -> Settings:
    return Settings(
        DATABASE_URL=database_url,
        KAFKA_BOOTSTRAP_SERVERS=bootstrap,
        SQUARE_WEBHOOK_SIGNATURE_KEYS=f"{SIGNATURE_KEY},{ROTATED_KEY}",
        SQUARE_WEBHOOK_URL=WEBHOOK_URL,
        SLUICE_ADMIN_TOKEN=ADMIN_TOKEN,
        SLUICE_CONSOLE_SECURE_COOKIE="false",
        SLUICE_KAFKA_IDEMPOTENCE="false",
        # A group of its own, so offsets and lag are this test's alone.
        SLUICE_CONSUMER_GROUP_PREFIX=f"test-{uuid.uuid4().hex[:12]}.",
    )


@dataclass(frozen=True, slots=True)
class Pipeline:
    ingest_url: str
    admin_url: str

    @property
    def console_url(self) -> str:
        return f"{self.admin_url}/console"

    def deliver(self, event: dict[str, Any], *, retry_number: int | None = None) -> str:
        """A signed Square delivery; the sluice id ingest answers."""
        body, headers = signed_square_delivery(
            event, key=SIGNATURE_KEY, url=WEBHOOK_URL, retry_number=retry_number
        )
        answer = httpx.post(f"{self.ingest_url}/webhooks/square", content=body, headers=headers)
        assert answer.status_code == 200, answer.text
        event_id: str = answer.json()["id"]
        return event_id


async def _consumer(settings: Settings) -> AsyncIterator[None]:
    engine = create_engine(settings.require_database_url(), pool_size=2)
    config = ConsumerConfig(
        bootstrap_servers=settings.require_kafka(),
        group_id=f"{settings.consumer_group_prefix}jobs",
        poll_ms=50,
        session_timeout_ms=6000,
        rebalance_timeout_ms=6000,
        drain_timeout_seconds=2.0,
        pause_check_seconds=2.0,
    )
    try:
        async with running(JobsProjection(), engine, config.bootstrap_servers, config):
            yield
    finally:
        await engine.dispose()


async def _relay(settings: Settings) -> AsyncIterator[None]:
    config = RelayConfig(
        database_url=settings.require_database_url(),
        bootstrap_servers=settings.require_kafka(),
        idempotence=False,
        poll_seconds=0.5,
        pause_check_seconds=2.0,
    )
    relay = Relay(config)
    task = asyncio.create_task(relay.run())
    try:
        yield
    finally:
        relay.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 10)


async def _serve(settings: Settings, ready: asyncio.Future[Pipeline], stop: asyncio.Event) -> None:
    try:
        await ensure_topics(settings.require_kafka(), pipeline_topics(), partitions=2)
        async with (
            running_server(create_app(settings)) as ingest_url,
            running_server(create_admin_app(settings)) as admin_url,
            contextlib.asynccontextmanager(_relay)(settings),
            contextlib.asynccontextmanager(_consumer)(settings),
        ):
            ready.set_result(Pipeline(ingest_url, admin_url))
            await stop.wait()
    except BaseException as exc:
        if not ready.done():
            ready.set_exception(exc)
        raise


@contextlib.contextmanager
def pipeline_in_thread(settings: Settings) -> Iterator[Pipeline]:
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    ready: asyncio.Future[Pipeline] = loop.create_future()
    thread = threading.Thread(
        target=lambda: loop.run_until_complete(_serve(settings, ready, stop)), daemon=True
    )
    thread.start()
    try:
        pipeline = asyncio.run_coroutine_threadsafe(_wait(ready), loop).result(timeout=60)
        yield pipeline
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)
        loop.close()


async def _wait(ready: asyncio.Future[Pipeline]) -> Pipeline:
    return await ready
