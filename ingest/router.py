"""The webhook router: pure ASGI in front of the Starlette app.

A webhook delivery goes straight from uvicorn to its handler: read the body (bounded), hand the
handler a `Delivery`, send the `Answer`. Deliveries are the hot path, and Starlette's routing,
request and response objects and middleware stack cost as much Python time per request as the
handler itself. Everything else (health, metrics, the lifespan) passes through to the app.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

from ingest.answers import Answer, problem
from sluice.body import BodyTooLargeError, ClientDisconnectedError, read_limited

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping

    from starlette.applications import Starlette
    from starlette.types import Receive, Scope, Send

    from ingest.observe import IngestMetrics, SourceMetrics
    from ingest.state import IngestState
    from sluice.tracing import Tracing

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Delivery:
    """One webhook request: header names lower-case (the first of repeated headers), raw body."""

    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class Webhook:
    path: str
    source: str
    handle: Callable[[IngestState, Delivery], Awaitable[Answer]]


_NOT_ALLOWED = problem(405, "use POST", "method_not_allowed", headers={"allow": "POST"})


class WebhookRouter:
    def __init__(
        self,
        app: Starlette,
        webhooks: tuple[Webhook, ...],
        metrics: IngestMetrics,
        tracing: Tracing | None,
    ) -> None:
        self._app = app
        self._routes: dict[str, tuple[Webhook, SourceMetrics]] = {
            w.path: (w, metrics.for_source(w.source)) for w in webhooks
        }
        self._tracing = tracing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self._routes.get(scope["path"]) if scope["type"] == "http" else None
        if route is None:
            await self._app(scope, receive, send)
            return
        if scope["method"] != "POST":
            await _NOT_ALLOWED(scope, receive, send)
            return
        webhook, counted = route
        counted.received.inc()
        started = time.perf_counter()
        headers = _headers(scope)
        if self._tracing is None:
            answer = await self._answer(webhook, headers, receive)
        else:
            with self._tracing.ingest_span(webhook.source, headers) as span:
                answer = await self._answer(webhook, headers, receive)
                if answer is not None:
                    span.set_attribute("http.response.status_code", answer.status)
        if answer is None:
            return  # the client hung up mid-body
        counted.answered(answer, time.perf_counter() - started)
        await answer(scope, receive, send)

    async def _answer(
        self, webhook: Webhook, headers: Mapping[str, str], receive: Receive
    ) -> Answer | None:
        state: IngestState = self._app.state.ingest
        limit = state.settings.max_body_bytes
        try:
            body = await read_limited(receive, headers.get("content-length"), limit)
        except BodyTooLargeError as exc:
            return problem(413, str(exc), "too_large")
        except ClientDisconnectedError:
            return None
        try:
            return await webhook.handle(state, Delivery(headers, body))
        except Exception:
            log.exception("ingest.unhandled_error", source=webhook.source)
            return problem(500, "internal error", "internal")


def _headers(scope: Scope) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name, value in scope["headers"]:
        key = name.decode("latin-1")
        if key not in headers:
            headers[key] = value.decode("latin-1")
    return headers
