"""The admin app: `POST /admin/reconcile/{square|airtable}` runs a reconcile, answers its summary.

A separate app (`sluice admin`), not a route on the ingest service: ingest faces the internet
for webhooks, admin stays on the cluster network; and a reconcile's Square calls never compete
with the webhooks' 10-second answer deadline.

`Authorization: Bearer <SLUICE_ADMIN_TOKEN>`, compared in constant time; without a configured
token every request gets 503 (closed, like the webhook endpoint without its keys).
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from datetime import datetime
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from recovery.lock import RunLockedError
from recovery.run_metrics import RunMetrics
from recovery.runs import SOURCES, AirtableOptions, default_square_window, reconcile
from sluice.auth import BearerAuth
from sluice.db import create_engine
from sluice.health import healthz
from sluice.metrics import exposition

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from starlette.requests import Request

    from sluice.settings import Settings


def _problem(status: int, detail: str, code: str) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail}, status_code=status)


def create_admin_app(settings: Settings) -> BearerAuth:
    database_url = settings.require_database_url()
    metrics = RunMetrics()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        engine = create_engine(database_url, pool_size=4, application_name="sluice-admin")
        app.state.engine = engine
        try:
            yield
        finally:
            await engine.dispose()

    async def reconcile_endpoint(request: Request) -> JSONResponse:
        source = request.path_params["source"]
        if source not in SOURCES:
            return _problem(404, f"choose one of {', '.join(SOURCES)}", "unknown_source")
        query = request.query_params
        full = query.get("full", "false").lower() in ("1", "true", "yes")
        if full and "lookback_minutes" in query:
            return _problem(400, "give lookback_minutes or full, not both", "bad_request")
        try:
            window = _window(query.get("from"), query.get("to"))
            options = AirtableOptions(
                lookback_minutes=int(query.get("lookback_minutes", "60")),
                full=full,
            )
        except ValueError as exc:
            return _problem(400, str(exc), "bad_request")
        if not 1 <= options.lookback_minutes <= 1440:
            return _problem(400, "lookback_minutes must be 1 to 1440", "bad_request")
        try:
            summary = await reconcile(
                settings,
                source,
                square_window=window,
                airtable=options,
                engine=request.app.state.engine,
            )
        except RunLockedError as exc:
            return _problem(409, str(exc), "locked")
        metrics.record(summary)
        return JSONResponse(summary.as_json(), status_code=200 if summary.ok else 500)

    app = Starlette(
        routes=[
            Route("/admin/reconcile/{source}", reconcile_endpoint, methods=["POST"]),
            Route("/metrics", _metrics_endpoint(metrics), methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    token = settings.admin_token.get_secret_value() if settings.admin_token else None
    return BearerAuth(app, token, "SLUICE_ADMIN_TOKEN", public=("/metrics", "/healthz"))


def _metrics_endpoint(metrics: RunMetrics) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(_: Request) -> Response:
        body, content_type = exposition(metrics.registry)
        return Response(body, media_type=content_type)

    return endpoint


def _window(start: str | None, end: str | None) -> tuple[datetime, datetime] | None:
    if start is None and end is None:
        return None
    default_start, default_end = default_square_window()
    low = datetime.fromisoformat(start) if start else default_start
    high = datetime.fromisoformat(end) if end else default_end
    if low.tzinfo is None or high.tzinfo is None or low >= high:
        raise ValueError("from and to must be ISO 8601 with a time zone, from before to")
    return low, high
