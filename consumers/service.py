"""`sluice consume <name>`: one consumer process, stopped cleanly by SIGTERM or Ctrl-C."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from typing import TYPE_CHECKING, Any

import structlog
from prometheus_client import CollectorRegistry

from consumers.dedupe import keep_pruned
from consumers.errors import DeadLetterLimitError
from consumers.message import RunsAlongside
from consumers.observe import ConsumerMetrics, ConsumerObserver
from consumers.registry import build_projection
from consumers.runtime import ConsumerConfig, ConsumerRuntime
from sluice.db import create_engine
from sluice.metrics import serve_metrics
from sluice.resilience import BreakerReport
from sluice.tracing import Tracing

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sqlalchemy.ext.asyncio import AsyncEngine

    from sluice.settings import Settings

log = structlog.get_logger(__name__)

EXIT_DLQ_LIMIT = 3


async def serve_consumer(
    settings: Settings, name: str, *, topics: Sequence[str] = (), group_id: str | None = None
) -> int:
    """Run one consumer until a signal; the exit code says how it ended."""
    # The metrics registry comes first: a projection that calls a provider through a circuit
    # breaker reports the breaker's state into it.
    registry = CollectorRegistry() if settings.metrics_port is not None else None
    tracing = Tracing.from_settings(settings, f"sluice-consume-{name}")
    projection = build_projection(
        name,
        topics,
        settings,
        breakers=BreakerReport(registry),
        registry=registry,
        tracing=tracing,
    )
    alongside = projection if isinstance(projection, RunsAlongside) else None
    config = ConsumerConfig.from_settings(settings, name, group_id=group_id)
    if tracing is not None:
        from consumers.tracing import TracedProjection  # noqa: PLC0415 - optional extra

        projection = TracedProjection(projection, tracing, config.group_id)
    engine = create_engine(
        settings.require_database_url(), pool_size=2, application_name=f"sluice-consume-{name}"
    )
    runtime = ConsumerRuntime(projection, engine, config)
    observer = _observer(settings, registry, runtime, engine, config)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, runtime.stop)
    task = asyncio.create_task(runtime.run())
    beside = (
        None
        if alongside is None
        else asyncio.create_task(alongside.run_alongside(engine, runtime.stopping))
    )
    pruning = asyncio.create_task(
        keep_pruned(
            engine,
            runtime.name,
            settings.dedupe_retention_days,
            settings.dead_letter_retention_days,
        )
    )
    try:
        stopping = asyncio.create_task(runtime.stopping.wait())
        done, _ = await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if task not in done:
            # Bounded: the batch in flight gets the drain timeout to commit, then we go.
            try:
                await asyncio.wait_for(asyncio.shield(task), config.drain_timeout_seconds)
            except TimeoutError:
                log.error("consumer.stop_timeout", consumer=name)  # noqa: TRY400 - no traceback to show
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                return 1
        stopping.cancel()
        task.result()
    except DeadLetterLimitError as exc:
        log.error("consumer.dead_letter_limit", consumer=name, error=str(exc))  # noqa: TRY400
        return EXIT_DLQ_LIMIT
    finally:
        for helper in (beside, pruning):
            if helper is not None:
                helper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await helper
        if observer is not None:
            await observer.stop()
        await engine.dispose()
        if tracing is not None:
            tracing.shutdown()
    return 0


def _observer(
    settings: Settings,
    registry: CollectorRegistry | None,
    runtime: ConsumerRuntime[Any],
    engine: AsyncEngine,
    config: ConsumerConfig,
) -> ConsumerObserver | None:
    """Metrics on SLUICE_METRICS_PORT, if set; lag is sampled only when someone can see it."""
    if settings.metrics_port is None or registry is None:
        return None
    fetcher = runtime.name == "airtable-fetcher"
    metrics = ConsumerMetrics(runtime, registry, airtable_webhooks=fetcher)
    serve_metrics(metrics.registry, settings.metrics_port)
    observer = ConsumerObserver(
        metrics,
        consumer=runtime.name,
        bootstrap_servers=config.bootstrap_servers,
        group_id=config.group_id,
        topics=runtime.projection.topics,
        engine=engine if fetcher else None,
    )
    observer.start()
    return observer
