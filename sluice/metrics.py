"""Every Prometheus metric sluice exports: one closed set of names, shared by every component.

Components build their metrics through `counter()`, `gauge()` and `histogram()` with a name from
`MetricName`, so a dashboard or an alert can only refer to a metric that exists (a test checks
`deploy/observability/` against `SPECS`). Each component keeps its own `CollectorRegistry`, so
several can live in one process (the tests do that); nothing is registered at import time.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Literal

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    push_to_gateway,
    start_http_server,
    write_to_textfile,
)
from prometheus_client.multiprocess import MultiProcessCollector

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

MetricName = Literal[
    # ingest
    "sluice_webhooks_received",
    "sluice_webhooks_accepted",
    "sluice_webhooks_duplicate",
    "sluice_webhooks_rejected",
    "sluice_webhook_ack_seconds",
    # relay
    "sluice_outbox_backlog_rows",
    "sluice_outbox_oldest_unpublished_age_seconds",
    "sluice_relay_published",
    "sluice_relay_buckets_held",
    "sluice_relay_publish_lag_seconds",
    # consumers
    "sluice_consumer_batches",
    "sluice_consumer_processed",
    "sluice_consumer_failures",
    "sluice_consumer_dead_lettered",
    "sluice_consumer_lag_messages",
    "sluice_consumer_cells_skipped",
    # reconciler (one run's summary, written as a text file or pushed)
    "sluice_reconcile_last_run_timestamp_seconds",
    "sluice_reconcile_last_run_duration_seconds",
    "sluice_reconcile_last_run_success",
    "sluice_reconcile_last_run_records",
    "sluice_recovery_watermark_timestamp_seconds",
    # Airtable webhooks
    "sluice_airtable_webhook_nearest_expiry_timestamp_seconds",
    "sluice_airtable_webhook_refresh_failures",
    "sluice_airtable_payload_errors",
    "sluice_airtable_tables_destroyed",
    # the write-back to Airtable (consumers/writeback_metrics.py)
    "sluice_writeback_leads",
    "sluice_writeback_push_seconds",
    "sluice_airtable_requests",
    # calls to providers (the write-back consumer, reconcile runs)
    "sluice_provider_breaker_state",
    # operators (sluice pause / resume)
    "sluice_component_paused",
]


class Kind(StrEnum):
    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"


@dataclass(frozen=True, slots=True)
class MetricSpec:
    kind: Kind
    help: str
    labels: tuple[str, ...] = ()


# Square gives up after 10 s and we answer 503 at 8 s: the buckets resolve the range that matters.
ACK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 8.0, 10.0)

# Commit to broker acknowledgement: milliseconds when healthy, minutes during an outage.
LAG_BUCKETS = (
    0.002,
    0.005,
    0.01,
    0.02,
    0.03,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
)

SPECS: Mapping[MetricName, MetricSpec] = {
    "sluice_webhooks_received": MetricSpec(Kind.COUNTER, "Webhook requests received", ("source",)),
    "sluice_webhooks_accepted": MetricSpec(
        Kind.COUNTER, "Webhook deliveries stored (new events)", ("source",)
    ),
    "sluice_webhooks_duplicate": MetricSpec(
        Kind.COUNTER, "Webhook deliveries of an event already stored", ("source",)
    ),
    "sluice_webhooks_rejected": MetricSpec(
        Kind.COUNTER, "Webhook requests answered with an error, by reason", ("source", "reason")
    ),
    "sluice_webhook_ack_seconds": MetricSpec(
        Kind.HISTOGRAM, "Time from request to 2xx (after the durable commit)", ("source",)
    ),
    "sluice_outbox_backlog_rows": MetricSpec(
        Kind.GAUGE, "Outbox rows not yet published (all relays)"
    ),
    "sluice_outbox_oldest_unpublished_age_seconds": MetricSpec(
        Kind.GAUGE, "Age of the oldest unpublished outbox row"
    ),
    "sluice_relay_published": MetricSpec(
        Kind.COUNTER, "Outbox rows this relay published and removed"
    ),
    "sluice_relay_buckets_held": MetricSpec(Kind.GAUGE, "Key buckets this relay holds a lease on"),
    "sluice_relay_publish_lag_seconds": MetricSpec(
        Kind.HISTOGRAM,
        "From an outbox row's insert (its transaction's start) to the broker acknowledging it",
    ),
    "sluice_consumer_batches": MetricSpec(
        Kind.COUNTER, "Batches applied and committed", ("consumer",)
    ),
    "sluice_consumer_processed": MetricSpec(
        Kind.COUNTER,
        "Messages committed, by outcome (applied, duplicate, ignored)",
        ("consumer", "outcome"),
    ),
    "sluice_consumer_failures": MetricSpec(
        Kind.COUNTER, "Transient failures retried (database, broker, offset commit)", ("consumer",)
    ),
    "sluice_consumer_dead_lettered": MetricSpec(
        Kind.COUNTER, "Messages sent to a dead-letter topic", ("consumer",)
    ),
    "sluice_component_paused": MetricSpec(
        Kind.GAUGE,
        "1 while an operator has paused this component (sluice pause), else 0",
        ("component",),
    ),
    "sluice_consumer_lag_messages": MetricSpec(
        Kind.GAUGE,
        "Messages between the group's committed offset and the end of the partition",
        ("consumer", "topic", "partition"),
    ),
    "sluice_consumer_cells_skipped": MetricSpec(
        Kind.COUNTER,
        "Source cells a consumer could not store (the rest of their change applied), by kind",
        ("consumer", "kind"),
    ),
    "sluice_reconcile_last_run_timestamp_seconds": MetricSpec(
        Kind.GAUGE, "When the last reconcile run finished (Unix time)", ("source",)
    ),
    "sluice_reconcile_last_run_duration_seconds": MetricSpec(
        Kind.GAUGE, "How long the last reconcile run took", ("source",)
    ),
    "sluice_reconcile_last_run_success": MetricSpec(
        Kind.GAUGE, "1 if the last reconcile run had no errors, else 0", ("source",)
    ),
    "sluice_writeback_leads": MetricSpec(
        Kind.GAUGE,
        "Leads by write-back state (pending, synced, conflict, failed), as lead_sync holds them",
        ("status",),
    ),
    "sluice_writeback_push_seconds": MetricSpec(
        Kind.HISTOGRAM, "From a staff change of a lead field to Airtable holding it"
    ),
    "sluice_airtable_requests": MetricSpec(
        Kind.COUNTER,
        "Requests sent to Airtable (its quotas count these), retries included",
        ("component",),
    ),
    "sluice_recovery_watermark_timestamp_seconds": MetricSpec(
        Kind.GAUGE,
        "How far a recovery pass has looked at the provider: all it had up to then is stored",
        ("pass",),
    ),
    "sluice_reconcile_last_run_records": MetricSpec(
        Kind.GAUGE,
        "Records of the last reconcile run, by result (scanned, created, updated, skipped, errors)",
        ("source", "result"),
    ),
    "sluice_airtable_webhook_nearest_expiry_timestamp_seconds": MetricSpec(
        Kind.GAUGE, "Expiry of the registered Airtable webhook that expires first (Unix time)"
    ),
    "sluice_airtable_webhook_refresh_failures": MetricSpec(
        Kind.GAUGE, "Webhooks the last `airtable webhooks refresh` failed to extend"
    ),
    "sluice_airtable_payload_errors": MetricSpec(
        Kind.COUNTER,
        "Error payloads Airtable listed for a webhook (it stopped serving it), by code",
        ("consumer", "code"),
    ),
    "sluice_airtable_tables_destroyed": MetricSpec(
        Kind.COUNTER, "Tables Airtable's payloads reported deleted", ("consumer",)
    ),
    "sluice_provider_breaker_state": MetricSpec(
        Kind.GAUGE,
        "Circuit breaker of calls to a provider: 0 closed, 1 half-open (one trial call), 2 open",
        ("provider",),
    ),
}

# Suffixes prometheus_client adds to the samples of a counter or a histogram.
_SAMPLE_SUFFIXES = {
    Kind.COUNTER: ("_total", "_created"),
    Kind.GAUGE: (),
    Kind.HISTOGRAM: ("_bucket", "_sum", "_count", "_created"),
}


def _spec(name: MetricName, kind: Kind) -> MetricSpec:
    spec = SPECS[name]
    if spec.kind is not kind:
        raise TypeError(f"{name} is a {spec.kind}, not a {kind}")
    return spec


def counter(name: MetricName, registry: CollectorRegistry) -> Counter:
    spec = _spec(name, Kind.COUNTER)
    return Counter(name, spec.help, spec.labels, registry=registry)


def gauge(name: MetricName, registry: CollectorRegistry) -> Gauge:
    spec = _spec(name, Kind.GAUGE)
    # Gauges of ingest workers are not summed; `liveall` shows each live process's value.
    return Gauge(name, spec.help, spec.labels, registry=registry, multiprocess_mode="liveall")


def histogram(
    name: MetricName, registry: CollectorRegistry, buckets: tuple[float, ...] = ACK_BUCKETS
) -> Histogram:
    spec = _spec(name, Kind.HISTOGRAM)
    return Histogram(name, spec.help, spec.labels, registry=registry, buckets=buckets)


def sample_names(name: MetricName) -> set[str]:
    """Every series name Prometheus sees for `name` (`_total`, `_bucket`, ...)."""
    suffixes = _SAMPLE_SUFFIXES[SPECS[name].kind]
    return {name + suffix for suffix in suffixes} if suffixes else {name}


def metric_of_sample(sample: str) -> MetricName | None:
    """The metric a series name belongs to, or None if it is not ours."""
    for name in SPECS:
        if sample in sample_names(name):
            return name
    return None


_SERIES = re.compile(r"\bsluice_[a-z0-9_]+")


def series_in(expression: str) -> set[str]:
    """The `sluice_*` series a PromQL expression refers to."""
    return set(_SERIES.findall(expression))


def multiprocess_dir() -> str | None:
    """Set when `sluice serve --workers N` shares metrics between worker processes."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def exposition(registry: CollectorRegistry) -> tuple[bytes, str]:
    """The body and content type of a /metrics answer (all workers' in multiprocess mode)."""
    path = multiprocess_dir()
    if path is not None:
        combined = CollectorRegistry()
        MultiProcessCollector(combined, path=path)  # type: ignore[no-untyped-call]
        return generate_latest(combined), CONTENT_TYPE_LATEST
    return generate_latest(registry), CONTENT_TYPE_LATEST


def serve_metrics(registry: CollectorRegistry, port: int, host: str = "0.0.0.0") -> None:
    """Expose /metrics over HTTP, from a daemon thread (components without an HTTP app)."""
    start_http_server(port, addr=host, registry=registry)


def export_once(
    registry: CollectorRegistry,
    *,
    textfile_dir: Path | None,
    pushgateway: str | None,
    job: str,
    grouping: Mapping[str, str] | None = None,
) -> Path | None:
    """For run-once jobs: `<dir>/<job>[_<grouping values>].prom`, written atomically for
    node_exporter's textfile collector, and/or a push that replaces the job's group.
    """
    written = None
    if textfile_dir is not None:
        textfile_dir.mkdir(parents=True, exist_ok=True)
        stem = "_".join([job, *(grouping or {}).values()]).replace("-", "_")
        written = textfile_dir / f"{stem}.prom"
        write_to_textfile(str(written), registry)
    if pushgateway is not None:
        push_to_gateway(pushgateway, job=job, registry=registry, grouping_key=dict(grouping or {}))
    return written
