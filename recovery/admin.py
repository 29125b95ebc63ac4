"""The admin app: `POST /admin/reconcile/{square|airtable}` runs a reconcile, answers its summary;
`GET /admin/events/{id}` answers an event's journey (by sluice's or the provider's event id), and
`GET /admin/events?entity=<id>` what happened lately to events about one booking, customer or lead.
Under /console/ the same service serves the operator console (recovery/console/).

A separate app (`sluice admin`), not a route on the ingest service: ingest faces the internet
for webhooks, admin stays on the cluster network; and a reconcile's Square calls never compete
with the webhooks' 10-second answer deadline.

`Authorization: Bearer <SLUICE_ADMIN_TOKEN>`, compared in constant time; without a configured
token every request gets 503 (closed, like the webhook endpoint without its keys). Query
parameters go through the platform's reader (sluice/query.py): a bad one is a 400 naming it.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from recovery.admin_events import EVENT_ROUTES, problem
from recovery.console.app import CONSOLE_ROUTES
from recovery.console.overview import LagSampler
from recovery.console.session import PREFIX, session_middleware
from recovery.lock import RunLockedError
from recovery.reconcile_airtable import MAX_LOOKBACK_MINUTES, AirtableOptions
from recovery.run_metrics import RunMetrics
from recovery.runs import SOURCES, default_square_window, reconcile
from sluice.auth import BearerAuth
from sluice.db import DatabaseUnavailableError, create_engine
from sluice.health import database_unavailable, healthz
from sluice.metrics import exposition
from sluice.query import ParameterError, Query

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable
    from datetime import datetime

    from starlette.requests import Request

    from sluice.settings import Settings


async def _bad_parameter(_: Request, exc: Exception) -> Response:
    if not isinstance(exc, ParameterError):
        raise exc
    return problem(400, str(exc), "bad_request")


def create_admin_app(settings: Settings) -> BearerAuth:
    database_url = settings.require_database_url()
    metrics = RunMetrics()

    token = settings.admin_token.get_secret_value() if settings.admin_token else None
    lag = LagSampler(settings.kafka_bootstrap_servers, settings.consumer_group_prefix)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        engine = create_engine(database_url, pool_size=6, application_name="sluice-admin")
        app.state.engine = engine
        app.state.settings = settings
        app.state.metrics = metrics
        app.state.admin_token = token.encode() if token is not None else None
        app.state.tasks = set()  # replays and reconciles the console started
        app.state.lag = lag
        try:
            async with lag.running():
                yield
        finally:
            for task in app.state.tasks:
                task.cancel()
            await engine.dispose()

    async def reconcile_endpoint(request: Request) -> JSONResponse:
        source = request.path_params["source"]
        if source not in SOURCES:
            return problem(404, f"choose one of {', '.join(SOURCES)}", "unknown_source")
        query = Query(request.query_params)
        full = query.boolean("full")
        lookback_minutes = query.integer(
            "lookback_minutes",
            default=AirtableOptions().lookback_minutes,
            minimum=1,
            maximum=MAX_LOOKBACK_MINUTES,
        )
        if full and query.given("lookback_minutes"):
            return problem(400, "give lookback_minutes or full, not both", "bad_request")
        ahead = query.boolean("ahead")
        if ahead and (query.given("from") or query.given("to")):
            return problem(400, "give ahead or from/to, not both", "bad_request")
        # As on the CLI: a date is a whole UTC day, `to` the last day of the window.
        window = _window(
            query.instant("from", dates=True), query.instant("to", dates=True, end=True)
        )
        if ahead:
            window = default_square_window(ahead_days=settings.square_reconcile_ahead_days)
        if window is not None and window[0] >= window[1]:
            return problem(400, "from must be before to", "bad_request")
        since = query.instant("since", dates=True)
        options = AirtableOptions(lookback_minutes=lookback_minutes, full=full)
        try:
            summary = await reconcile(
                settings,
                source,
                square_window=window,
                square_since=since,
                airtable=options,
                engine=request.app.state.engine,
                breakers=metrics.breakers,
                actor="admin-api",
            )
        except RunLockedError as exc:
            return problem(409, str(exc), "locked")
        metrics.record(summary)
        return JSONResponse(summary.as_json(), status_code=200 if summary.ok else 500)

    app = Starlette(
        routes=[
            Route("/admin/reconcile/{source}", reconcile_endpoint, methods=["POST"]),
            *EVENT_ROUTES,
            *CONSOLE_ROUTES,
            Route("/metrics", _metrics_endpoint(metrics), methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
        ],
        lifespan=lifespan,
        exception_handlers={
            ParameterError: _bad_parameter,
            DatabaseUnavailableError: database_unavailable,
        },
    )
    with_sessions = session_middleware(app, settings, token)
    return BearerAuth(
        with_sessions,
        token,
        "SLUICE_ADMIN_TOKEN",
        public=("/metrics", "/healthz"),
        delegated=(PREFIX,),
    )


def _metrics_endpoint(metrics: RunMetrics) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(_: Request) -> Response:
        body, content_type = exposition(metrics.registry)
        return Response(body, media_type=content_type)

    return endpoint


def _window(start: datetime | None, end: datetime | None) -> tuple[datetime, datetime] | None:
    """The Square window asked for, the default filling a bound not given."""
    if start is None and end is None:
        return None
    default_start, default_end = default_square_window()
    return start or default_start, end or default_end
