"""Metrics for the webhook endpoints.

Counted from the `Answer` alone (its `reason` says accepted, duplicate, or why it was refused),
so the endpoints need no metrics code. Counter increments and one histogram observation per
request: nothing that waits. Every answer is also tallied for the database
(ingest/answer_tally.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from starlette.responses import Response

from ingest.answer_tally import AnswerTally
from sluice.metrics import counter, exposition, histogram

if TYPE_CHECKING:
    from prometheus_client import Counter, Histogram
    from starlette.requests import Request

    from ingest.answers import Answer


class SourceMetrics:
    """One source's children, bound once so the hot path does no label lookups."""

    def __init__(self, metrics: IngestMetrics, source: str) -> None:
        self.source = source
        self.received = metrics.received.labels(source)
        self.accepted = metrics.accepted.labels(source)
        self.duplicate = metrics.duplicate.labels(source)
        self.ack_seconds = metrics.ack_seconds.labels(source)
        self._rejected = metrics.rejected
        self._tally = metrics.answers

    def answered(self, answer: Answer, seconds: float) -> None:
        self._tally.add(self.source, answer.reason)
        if answer.reason == "accepted":
            self.accepted.inc()
        elif answer.reason == "duplicate":
            self.duplicate.inc()
        else:
            self._rejected.labels(self.source, answer.reason).inc()
            return
        self.ack_seconds.observe(seconds)


class IngestMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.received: Counter = counter("sluice_webhooks_received", self.registry)
        self.accepted: Counter = counter("sluice_webhooks_accepted", self.registry)
        self.duplicate: Counter = counter("sluice_webhooks_duplicate", self.registry)
        self.rejected: Counter = counter("sluice_webhooks_rejected", self.registry)
        self.ack_seconds: Histogram = histogram("sluice_webhook_ack_seconds", self.registry)
        self.answers = AnswerTally()  # the same answers, for the console (webhook_answers)

    def for_source(self, source: str) -> SourceMetrics:
        return SourceMetrics(self, source)

    async def endpoint(self, _: Request) -> Response:
        body, content_type = exposition(self.registry)
        return Response(body, media_type=content_type)
