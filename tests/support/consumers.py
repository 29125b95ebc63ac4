"""Helpers for the consumer tests: messages shaped exactly as the relay publishes them."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import TYPE_CHECKING, Any

import psycopg
from aiokafka import AIOKafkaProducer

from consumers.jobs import JobsProjection
from consumers.message import ConsumedMessage
from consumers.runtime import ConsumerConfig, ConsumerRuntime
from devkit.simulate import square_kafka_message
from tests.support.rows import one_row

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable

    from sqlalchemy.ext.asyncio import AsyncEngine


Conn = psycopg.Connection[tuple[Any, ...]]

# Small timeouts: the embedded broker holds a group join for about the rebalance timeout.
FAST_GROUP = {"session_timeout_ms": 1000, "rebalance_timeout_ms": 1000}


def fresh_topics() -> tuple[str, str]:
    suffix = uuid.uuid4().hex[:10]
    return f"test.bookings.{suffix}", f"test.customers.{suffix}"


def topic_for(event: dict[str, Any], topics: tuple[str, str]) -> str:
    return topics[0] if event["data"]["type"] == "booking" else topics[1]


def consumed(
    event: dict[str, Any], topics: tuple[str, str], *, offset: int = 0, ce_id: str | None = None
) -> ConsumedMessage:
    """The message the consumer would receive for this Square webhook body."""
    message = square_kafka_message(event)
    headers = dict(message.headers)
    if ce_id is not None:
        headers["ce_id"] = ce_id
    return ConsumedMessage(
        topic=topic_for(event, topics),
        partition=0,
        offset=offset,
        key=message.key.encode(),
        value=message.payload_json.encode(),
        headers=tuple((k, v.encode()) for k, v in headers.items()),
    )


async def produce(bootstrap: str, messages: Iterable[ConsumedMessage]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        pending = [
            await producer.send(m.topic, value=m.value, key=m.key, headers=list(m.headers))
            for m in messages
        ]
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


def offline_runtime(engine: AsyncEngine, topics: tuple[str, str]) -> ConsumerRuntime[Any]:
    """The runtime, used without Kafka: `apply_batch` is the path every consumed batch takes."""
    config = ConsumerConfig(bootstrap_servers="unused:9092", group_id="unused")
    return ConsumerRuntime(JobsProjection(topics), engine, config)


def make_runtime(
    engine: AsyncEngine,
    bootstrap: str,
    topics: tuple[str, str],
    *,
    group_id: str | None = None,
    runtime_class: type[ConsumerRuntime[Any]] = ConsumerRuntime,
    **config: Any,
) -> ConsumerRuntime[Any]:
    settings = {**FAST_GROUP, "poll_ms": 50, "drain_timeout_seconds": 2.0, **config}
    return runtime_class(
        JobsProjection(topics),
        engine,
        ConsumerConfig(
            bootstrap_servers=bootstrap, group_id=group_id or f"test-{uuid.uuid4().hex}", **settings
        ),
    )


@contextlib.asynccontextmanager
async def running_consumer(
    engine: AsyncEngine, bootstrap: str, topics: tuple[str, str], **options: Any
) -> AsyncIterator[ConsumerRuntime[Any]]:
    runtime = make_runtime(engine, bootstrap, topics, **options)
    task = asyncio.create_task(runtime.run())
    try:
        await asyncio.wait_for(_first(runtime.assigned.wait(), task), 20)
        yield runtime
    finally:
        runtime.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 10)


async def _first(waiting: Any, task: asyncio.Task[None]) -> None:
    waiter = asyncio.ensure_future(waiting)
    done, _ = await asyncio.wait({waiter, task}, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        waiter.cancel()
        task.result()


def job(db: Conn, booking_id: str) -> dict[str, Any] | None:
    return one_row(db, "SELECT * FROM jobs WHERE booking_id = %s", booking_id)
