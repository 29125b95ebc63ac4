"""OpenTelemetry trace context, from the webhook request to the consumer's database write.

Off by default (`SLUICE_TRACING=off`) and optional: the `otel` extra brings the SDK. When on:

1. ingest continues the request's W3C `traceparent` (or starts a trace) with a server span and
   puts that span's `traceparent` in a context variable for the request;
2. the group-commit writer copies it into the outbox row's headers (`GroupCommitWriter.record`
   runs in the request's task, so it sees the request's context);
3. the relay publishes the row's headers as Kafka headers, unchanged;
4. the consumer starts its span around the projection's database write with that context as
   parent (`consumers/tracing.py`).

The App API does the same for every change: a server span, whose `traceparent` goes into the
outbox rows of `app.changes` and into the lead's `lead_sync` row, so the write-back's push to
Airtable is a span of the same trace. The Airtable fetcher continues each ping's trace while it
fetches (`continuing`), so the records events it writes, and the leads consumer's write, are in
the ping's trace too. Every outbox row written while a trace is current carries it
(`stamp_traceparent`).

With tracing off nothing here is imported from OpenTelemetry and the hot path reads one unset
context variable.
"""

from __future__ import annotations

import contextlib
from contextvars import ContextVar
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span

    from sluice.settings import Settings

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"

_current_traceparent: ContextVar[str | None] = ContextVar("sluice_traceparent", default=None)


def current_traceparent() -> str | None:
    """The `traceparent` of the span this task works for (a request, a ping being fetched), if
    tracing is on."""
    return _current_traceparent.get()


def stamp_traceparent(headers: dict[str, str]) -> None:
    """Give an outbox message the current trace, unless it carries one already."""
    traceparent = _current_traceparent.get()
    if traceparent is not None and TRACEPARENT not in headers:
        headers[TRACEPARENT] = traceparent


@contextlib.contextmanager
def continuing(traceparent: str | None) -> Iterator[None]:
    """Work in the block is part of the trace `traceparent` names (none: as it was)."""
    if traceparent is None:
        yield
        return
    token = _current_traceparent.set(traceparent)
    try:
        yield
    finally:
        _current_traceparent.reset(token)


class Tracing:
    """One process's tracer; built at start from settings, or by a test with its own provider."""

    def __init__(self, provider: TracerProvider) -> None:
        from opentelemetry.trace.propagation.tracecontext import (  # noqa: PLC0415 - optional extra
            TraceContextTextMapPropagator,
        )

        self.provider = provider
        self.tracer = provider.get_tracer("sluice")
        self._propagator = TraceContextTextMapPropagator()

    @classmethod
    def from_settings(cls, settings: Settings, service: str) -> Tracing | None:
        if settings.tracing == "off":
            return None
        try:
            from opentelemetry.sdk.resources import Resource  # noqa: PLC0415
            from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
            from opentelemetry.sdk.trace.export import (  # noqa: PLC0415
                BatchSpanProcessor,
                ConsoleSpanExporter,
                SpanExporter,
            )
        except ImportError as exc:
            raise RuntimeError(
                "SLUICE_TRACING is on but OpenTelemetry is not installed: "
                "pip install 'sluice[otel]'"
            ) from exc
        exporter: SpanExporter
        if settings.tracing == "otlp":
            # Endpoint, headers and protocol come from the standard OTEL_EXPORTER_OTLP_* variables.
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
                OTLPSpanExporter,
            )

            exporter = OTLPSpanExporter()
        else:
            exporter = ConsoleSpanExporter()
        provider = TracerProvider(resource=Resource.create({"service.name": service}))
        provider.add_span_processor(BatchSpanProcessor(exporter))
        return cls(provider)

    def shutdown(self) -> None:
        """Flush spans still buffered; call once at stop."""
        self.provider.shutdown()

    def ingest_span(
        self, source: str, headers: Mapping[str, str]
    ) -> contextlib.AbstractContextManager[Span]:
        """A server span for one webhook request, child of the caller's `traceparent` if any."""
        return self.server_span(
            f"POST /webhooks/{source}",
            headers,
            {"http.request.method": "POST", "sluice.source": source},
        )

    @contextlib.contextmanager
    def server_span(
        self, name: str, headers: Mapping[str, str], attributes: Mapping[str, str]
    ) -> Iterator[Span]:
        """A server span for one request, child of the caller's `traceparent` if any; its own
        `traceparent` is current in the block."""
        from opentelemetry.trace import SpanKind  # noqa: PLC0415

        parent = self._propagator.extract(
            {k: headers[k] for k in (TRACEPARENT, TRACESTATE) if k in headers}
        )
        with self.tracer.start_as_current_span(
            name, context=parent, kind=SpanKind.SERVER, attributes=dict(attributes)
        ) as span:
            token = _current_traceparent.set(self.traceparent_of(span))
            try:
                yield span
            finally:
                _current_traceparent.reset(token)

    def consumer_span(
        self, name: str, *, topic: str, group: str | None, traceparent: str | None
    ) -> Span:
        """A started (not current) consumer span whose parent is the message's `traceparent`."""
        from opentelemetry.trace import SpanKind  # noqa: PLC0415

        parent = self._propagator.extract({TRACEPARENT: traceparent} if traceparent else {})
        attributes = {
            "messaging.system": "kafka",
            "messaging.destination.name": topic,
            "sluice.consumer": name,
        }
        if group is not None:
            attributes["messaging.consumer.group.name"] = group
        return self.tracer.start_span(
            f"process {topic}", context=parent, kind=SpanKind.CONSUMER, attributes=attributes
        )

    def client_span(
        self, name: str, *, traceparent: str | None, attributes: Mapping[str, str]
    ) -> Span:
        """A started client span (a call to a provider) in the trace `traceparent` names."""
        from opentelemetry.trace import SpanKind  # noqa: PLC0415

        parent = self._propagator.extract({TRACEPARENT: traceparent} if traceparent else {})
        return self.tracer.start_span(
            name, context=parent, kind=SpanKind.CLIENT, attributes=dict(attributes)
        )

    def traceparent_of(self, span: Span) -> str | None:
        from opentelemetry.trace import set_span_in_context  # noqa: PLC0415

        carrier: dict[str, str] = {}
        self._propagator.inject(carrier, context=set_span_in_context(span))
        return carrier.get(TRACEPARENT)
