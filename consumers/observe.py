"""A consumer's metrics: counts read from the runtime at scrape time, lag sampled on the side.

The counters cost the consume loop nothing: `ConsumerStats` is already kept per batch, and a
collector turns it into samples when Prometheus asks. Lag is measured by a separate task from
the group's committed offsets and the partitions' end offsets, so it keeps growing on the graph
while the consumer itself is stuck (retrying a database outage, say). The Airtable fetcher also
exports the nearest webhook expiry, so the alert works even when the refresh job never runs.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from ingest.airtable_webhooks import nearest_expiry
from sluice.db import DatabaseUnavailableError
from sluice.metrics import SPECS, gauge

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from prometheus_client import Gauge
    from prometheus_client.metrics_core import Metric
    from sqlalchemy.ext.asyncio import AsyncEngine

    from consumers.runtime import ConsumerRuntime
    from sluice.metrics import MetricName

log = structlog.get_logger(__name__)


class _StatsCollector(Collector):
    def __init__(self, runtime: ConsumerRuntime[Any]) -> None:
        self._runtime = runtime

    def collect(self) -> Iterator[Metric]:
        stats = self._runtime.stats
        name = self._runtime.name

        def family(metric: MetricName) -> CounterMetricFamily:
            spec = SPECS[metric]
            return CounterMetricFamily(metric, spec.help, labels=spec.labels)

        batches = family("sluice_consumer_batches")
        batches.add_metric([name], stats.batches)
        processed = family("sluice_consumer_processed")
        processed.add_metric([name, "applied"], stats.applied)
        processed.add_metric([name, "duplicate"], stats.duplicates)
        processed.add_metric([name, "ignored"], stats.ignored)
        failures = family("sluice_consumer_failures")
        failures.add_metric([name], stats.failures)
        dead = family("sluice_consumer_dead_lettered")
        dead.add_metric([name], stats.dead_lettered)
        paused = GaugeMetricFamily(
            "sluice_component_paused",
            SPECS["sluice_component_paused"].help,
            labels=SPECS["sluice_component_paused"].labels,
        )
        paused.add_metric([self._runtime.pause.component], int(self._runtime.pause.paused))
        yield from (batches, processed, failures, dead, paused)
        # The projection's own counts: one family per metric, a sample per label set.
        tallied: dict[MetricName, CounterMetricFamily] = {}
        for (metric, labels), count in sorted(stats.tally.items()):
            if metric not in tallied:
                tallied[metric] = family(metric)
            tallied[metric].add_metric([name, *labels], count)
        yield from tallied.values()


class ConsumerMetrics:
    def __init__(
        self,
        runtime: ConsumerRuntime[Any],
        registry: CollectorRegistry | None = None,
        *,
        airtable_webhooks: bool = False,
    ) -> None:
        self.registry = registry or CollectorRegistry()
        self.registry.register(_StatsCollector(runtime))
        self.lag: Gauge = gauge("sluice_consumer_lag_messages", self.registry)
        # 0 until sampled, and while no webhook is registered.
        self.nearest_expiry: Gauge | None = (
            gauge("sluice_airtable_webhook_nearest_expiry_timestamp_seconds", self.registry)
            if airtable_webhooks
            else None
        )


async def partition_lag(
    bootstrap_servers: str, group_id: str, topics: Sequence[str]
) -> dict[TopicPartition, int]:
    """Messages not yet committed by `group_id`, per partition of `topics`."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    probe = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False)
    # Both are closed however this ends: a failed or cancelled start (a sampler's timeout, its
    # task cancelled at shutdown) included, which would otherwise leave the probe unclosed.
    try:
        await admin.start()
        await probe.start()
        await probe.topics()  # refreshes metadata, so partitions_for_topic knows them
        tps = [
            TopicPartition(topic, partition)
            for topic in topics
            for partition in sorted(probe.partitions_for_topic(topic) or ())
        ]
        if not tps:
            return {}
        committed = await admin.list_consumer_group_offsets(group_id, partitions=tps)
        ends = await probe.end_offsets(tps)
        starts = await probe.beginning_offsets(tps)
    finally:
        await probe.stop()
        await admin.close()
    lag = {}
    for tp in tps:
        done = committed.get(tp)
        position = done.offset if done is not None and done.offset >= 0 else starts[tp]
        lag[tp] = max(0, ends[tp] - position)
    return lag


class ConsumerObserver:
    """Samples lag (and, with `airtable_webhooks`, the nearest webhook expiry) every interval."""

    def __init__(  # noqa: PLR0913 - what sampling needs
        self,
        metrics: ConsumerMetrics,
        *,
        consumer: str,
        bootstrap_servers: str,
        group_id: str,
        topics: Sequence[str],
        engine: AsyncEngine | None = None,
        interval_seconds: float = 15.0,
    ) -> None:
        self.metrics = metrics
        self._consumer = consumer
        self._bootstrap = bootstrap_servers
        self._group_id = group_id
        self._topics = tuple(topics)
        self._engine = engine
        self._interval = interval_seconds
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"observe-{self._consumer}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def sample(self) -> None:
        try:
            lag = await asyncio.wait_for(
                partition_lag(self._bootstrap, self._group_id, self._topics), self._interval
            )
        except (KafkaError, OSError, TimeoutError) as exc:
            log.warning("consumer.lag_sample_failed", consumer=self._consumer, error=str(exc))
        else:
            for tp, messages in lag.items():
                self.metrics.lag.labels(self._consumer, tp.topic, str(tp.partition)).set(messages)
        if self.metrics.nearest_expiry is not None and self._engine is not None:
            await self._sample_expiry(self.metrics.nearest_expiry, self._engine)

    async def _sample_expiry(self, expiry: Gauge, engine: AsyncEngine) -> None:
        try:
            nearest = await nearest_expiry(engine)
        except DatabaseUnavailableError as exc:
            log.warning("consumer.expiry_sample_failed", error=str(exc))
            return
        expiry.set(0.0 if nearest is None else nearest)

    async def _run(self) -> None:
        while True:
            await self.sample()
            await asyncio.sleep(self._interval)
