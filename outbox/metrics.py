"""Relay metrics, in their own registry so several relays can live in one process (tests).

The names and help texts are defined once, in `sluice.metrics`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry

from sluice.metrics import LAG_BUCKETS, counter, gauge, histogram, serve_metrics

if TYPE_CHECKING:
    from sluice.metrics import MetricName


class RelayMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.backlog_rows = gauge("sluice_outbox_backlog_rows", self.registry)
        self.oldest_age_seconds = gauge(
            "sluice_outbox_oldest_unpublished_age_seconds", self.registry
        )
        # A counter: rate(sluice_relay_published_total[1m]) is published rows per second.
        self.published = counter("sluice_relay_published", self.registry)
        self.buckets_held = gauge("sluice_relay_buckets_held", self.registry)
        self.paused = gauge("sluice_component_paused", self.registry)
        self.publish_lag = histogram("sluice_relay_publish_lag_seconds", self.registry, LAG_BUCKETS)

    def serve(self, port: int, host: str = "0.0.0.0") -> None:
        """Expose /metrics over HTTP, from a daemon thread."""
        serve_metrics(self.registry, port, host)

    def value(self, name: MetricName) -> float:
        sample = name + ("_total" if name == "sluice_relay_published" else "")
        found = self.registry.get_sample_value(sample)
        return 0.0 if found is None else found
