"""A reconcile run's summary as Prometheus gauges: on the admin app's /metrics, or written out
by the run-once CLI (a text file for node_exporter and/or a Pushgateway push).

Gauges of the last run, not counters: a CronJob's process lives for one run, and what an alert
wants to know is what the latest run found (many `created` means webhooks are being missed).
`breakers` is the hook a run's provider circuit breaker reports to: it sets
`sluice_provider_breaker_state` in the same registry.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import TYPE_CHECKING, Literal

from prometheus_client import CollectorRegistry

from sluice.metrics import export_once, gauge
from sluice.resilience import BreakerReport

if TYPE_CHECKING:
    from pathlib import Path

    from recovery.summary import Outcome, RunSummary
    from sluice.settings import Settings

RESULTS: tuple[Outcome | Literal["scanned"], ...] = ("scanned", "created", "updated", "skipped")


class RunMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.finished_at = gauge("sluice_reconcile_last_run_timestamp_seconds", self.registry)
        self.duration = gauge("sluice_reconcile_last_run_duration_seconds", self.registry)
        self.success = gauge("sluice_reconcile_last_run_success", self.registry)
        self.records = gauge("sluice_reconcile_last_run_records", self.registry)
        self.watermarks = gauge("sluice_recovery_watermark_timestamp_seconds", self.registry)
        self.breakers = BreakerReport(self.registry)

    def record(self, summary: RunSummary) -> None:
        source = summary.source
        document = summary.as_json()
        self.finished_at.labels(source).set(time.time())
        self.duration.labels(source).set(document["duration_seconds"])
        self.success.labels(source).set(1 if summary.ok else 0)
        for result in RESULTS:
            self.records.labels(source, result).set(summary.total(result))
        self.records.labels(source, "errors").set(len(summary.errors))
        for name, at in document.get("watermarks", {}).items():
            self.watermarks.labels(name).set(datetime.fromisoformat(at).timestamp())


def export_run(
    settings: Settings, summary: RunSummary, metrics: RunMetrics | None = None
) -> Path | None:
    """Write/push one run's metrics (those `metrics` gathered during the run, if given) where
    the settings say; nothing when neither is set."""
    if settings.metrics_textfile_dir is None and settings.pushgateway_url is None:
        return None
    metrics = metrics or RunMetrics()
    metrics.record(summary)
    return export_once(
        metrics.registry,
        textfile_dir=settings.metrics_textfile_dir,
        pushgateway=settings.pushgateway_url,
        job="sluice-reconcile",
        grouping={"source": summary.source},
    )
