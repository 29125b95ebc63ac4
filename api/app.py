"""The App API (`sluice api`): what the staff app and the portal read and change.

A Starlette app of its own, beside ingest and admin: ingest must answer webhooks within the
providers' deadlines and faces the internet for them alone, while this API serves people, holds
long-lived event streams, and is authenticated with its own token.
"""

from __future__ import annotations

import asyncio
import contextlib
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import JSONResponse
from starlette.routing import Route

from api import jobs, leads
from api.changes import ChangeFeed, changes
from api.openapi import openapi_document
from api.responses import ApiError, api_error_response, parameter_error_response
from sluice.auth import BearerAuth
from sluice.db import DatabaseUnavailableError, create_engine
from sluice.health import database_unavailable, healthz
from sluice.query import ParameterError
from sluice.tracing import Tracing

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from starlette.requests import Request

    from sluice.settings import Settings

OPENAPI_PATH = "/api/openapi.json"
# What a browser client may send besides the simple headers.
CORS_REQUEST_HEADERS = (
    "Authorization",
    "Content-Type",
    "X-Idempotency-Key",
    "If-Match",
    "If-None-Match",
    "Last-Event-ID",
)
PUBLIC_PATHS = (OPENAPI_PATH, "/healthz")


def routes() -> list[Route]:
    async def openapi(_request: Request) -> JSONResponse:
        return JSONResponse(openapi_document())

    return [
        Route("/api/jobs", jobs.list_jobs, methods=["GET"]),
        Route("/api/jobs/status", jobs.bulk_status, methods=["POST"]),
        Route("/api/jobs/{id}", jobs.get_job, methods=["GET"]),
        Route("/api/jobs/{id}", jobs.patch_job, methods=["PATCH"]),
        Route("/api/leads", leads.list_leads, methods=["GET"]),
        Route("/api/leads/{id}", leads.get_lead, methods=["GET"]),
        Route("/api/leads/{id}", leads.patch_lead, methods=["PATCH"]),
        Route("/api/leads/{id}/claim", leads.claim_lead, methods=["POST"]),
        Route("/api/leads/{id}/unclaim", leads.unclaim_lead, methods=["POST"]),
        Route("/api/leads/{id}/resolve", leads.resolve_lead, methods=["POST"]),
        Route("/api/leads/{id}/retry", leads.retry_lead, methods=["POST"]),
        Route("/api/changes", changes, methods=["GET"]),
        Route(OPENAPI_PATH, openapi, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
    ]


def create_api_app(
    settings: Settings, *, tracing: Tracing | None = None
) -> BearerAuth | CORSMiddleware:
    database_url = settings.require_database_url()
    own_tracing = tracing is None  # a tracer given by the caller is the caller's to shut down
    tracing = tracing or Tracing.from_settings(settings, "sluice-api")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        engine = create_engine(
            database_url, pool_size=settings.db_pool_size, application_name="sluice-api"
        )
        feed = ChangeFeed(engine, database_url, settings.changes_retention_seconds)
        app.state.settings = settings
        app.state.engine = engine
        app.state.feed = feed
        app.state.tracing = tracing
        feed_task = asyncio.create_task(feed.run())
        try:
            yield
        finally:
            feed_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await feed_task
            await engine.dispose()
            if tracing is not None and own_tracing:
                tracing.shutdown()

    app = Starlette(
        routes=routes(),
        lifespan=lifespan,
        exception_handlers={
            ApiError: api_error_response,
            ParameterError: parameter_error_response,
            DatabaseUnavailableError: database_unavailable,
        },
    )
    token = settings.api_token.get_secret_value() if settings.api_token is not None else None
    authenticated = BearerAuth(app, token, "SLUICE_API_TOKEN", PUBLIC_PATHS)
    if not settings.api_cors_origins:
        return authenticated
    # Outside the token check: a browser's preflight carries no Authorization header. The API
    # authenticates by bearer token, never by cookie, so credentials are never allowed, and a
    # `*` lets any origin read only what its token may.
    return CORSMiddleware(
        authenticated,
        allow_origins=settings.api_cors_origins,
        allow_methods=["GET", "POST", "PATCH"],
        allow_headers=list(CORS_REQUEST_HEADERS),
        expose_headers=["ETag", "Idempotent-Replayed", "WWW-Authenticate"],
        allow_credentials=False,
        max_age=600,
    )
