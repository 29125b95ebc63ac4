"""Metrics and traces around the webhook endpoints, without touching their code.

`observed()` wraps an endpoint: it counts the request, times it, and reads the answer's kind
(`AcceptedResponse.duplicate`, `ProblemResponse.reason`) to count the outcome. Counter increments
and one histogram observation per request: nothing that waits.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from starlette.responses import Response

from ingest.responses import AcceptedResponse, ProblemResponse
from sluice.metrics import counter, exposition, histogram

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from prometheus_client import Counter, Histogram
    from starlette.requests import Request

    from sluice.tracing import Tracing

    Endpoint = Callable[[Request], Awaitable[Response]]


class _SourceMetrics:
    """One source's children, bound once so the hot path does no label lookups."""

    def __init__(self, metrics: IngestMetrics, source: str) -> None:
        self.source = source
        self.received = metrics.received.labels(source)
        self.accepted = metrics.accepted.labels(source)
        self.duplicate = metrics.duplicate.labels(source)
        self.ack_seconds = metrics.ack_seconds.labels(source)
        self._rejected = metrics.rejected

    def answered(self, response: Response, seconds: float) -> None:
        if isinstance(response, AcceptedResponse):
            (self.duplicate if response.duplicate else self.accepted).inc()
            self.ack_seconds.observe(seconds)
            return
        reason = response.reason if isinstance(response, ProblemResponse) else "other"
        self._rejected.labels(self.source, reason).inc()


class IngestMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.received: Counter = counter("sluice_webhooks_received", self.registry)
        self.accepted: Counter = counter("sluice_webhooks_accepted", self.registry)
        self.duplicate: Counter = counter("sluice_webhooks_duplicate", self.registry)
        self.rejected: Counter = counter("sluice_webhooks_rejected", self.registry)
        self.ack_seconds: Histogram = histogram("sluice_webhook_ack_seconds", self.registry)

    def for_source(self, source: str) -> _SourceMetrics:
        return _SourceMetrics(self, source)

    async def endpoint(self, _: Request) -> Response:
        body, content_type = exposition(self.registry)
        return Response(body, media_type=content_type)


def observed(
    endpoint: Endpoint, source: str, metrics: IngestMetrics, tracing: Tracing | None
) -> Endpoint:
    counted = metrics.for_source(source)

    async def handler(request: Request) -> Response:
        counted.received.inc()
        started = time.perf_counter()
        if tracing is None:
            response = await endpoint(request)
        else:
            with tracing.ingest_span(source, request.headers) as span:
                response = await endpoint(request)
                span.set_attribute("http.response.status_code", response.status_code)
        counted.answered(response, time.perf_counter() - started)
        return response

    return handler
