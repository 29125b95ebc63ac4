"""The ingest app factory. Settings come in; nothing is created at import time."""

from __future__ import annotations

import asyncio
import contextlib
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import structlog
from starlette.applications import Starlette
from starlette.routing import Route

from ingest.airtable import airtable_webhook
from ingest.group_commit import GroupCommitWriter
from ingest.health import healthz, readyz
from ingest.observe import IngestMetrics
from ingest.partitions import keep_up
from ingest.router import Webhook, WebhookRouter
from ingest.square import square_webhook
from ingest.state import IngestState
from sluice.db import create_engine
from sluice.gc_policy import freeze_startup_objects
from sluice.logging import configure_logging
from sluice.settings import Settings
from sluice.tracing import Tracing

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from starlette.types import ASGIApp

log = structlog.get_logger(__name__)


WEBHOOKS = (
    Webhook("/webhooks/square", "square", square_webhook),
    Webhook("/webhooks/airtable", "airtable", airtable_webhook),
)


def create_app(settings: Settings | None = None, *, tracing: Tracing | None = None) -> ASGIApp:
    if settings is None:  # built here when uvicorn runs several worker processes
        settings = Settings()
        configure_logging(settings.log_format, settings.log_level)
    database_url = settings.require_database_url()
    metrics = IngestMetrics()
    tracing = tracing or Tracing.from_settings(settings, "sluice-ingest")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        engine = create_engine(
            database_url, pool_size=settings.db_pool_size, application_name="sluice-ingest"
        )
        writer = GroupCommitWriter(
            database_url, writers=settings.ingest_writers, batch_max=settings.ingest_batch_max
        )
        await writer.start()
        freeze_startup_objects()
        app.state.ingest = IngestState(settings=settings, engine=engine, writer=writer)
        if not settings.square_verification_configured:
            log.warning(
                "square.verification_not_configured",
                detail="SQUARE_WEBHOOK_SIGNATURE_KEYS or SQUARE_WEBHOOK_URL is not set; "
                "POST /webhooks/square refuses every request",
            )
        store_upkeep = asyncio.create_task(keep_up(engine, settings.event_retention_days))
        try:
            async with metrics.answers.flushing(engine):
                yield
        finally:
            store_upkeep.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await store_upkeep
            await writer.stop()
            await engine.dispose()
            if tracing is not None:
                tracing.shutdown()

    app = Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics.endpoint, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    return WebhookRouter(app, WEBHOOKS, metrics, tracing)
