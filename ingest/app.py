"""The ingest app factory. Settings come in; nothing is created at import time."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import structlog
from starlette.applications import Starlette
from starlette.routing import Route

from ingest.group_commit import GroupCommitWriter
from ingest.health import healthz, readyz
from ingest.square import square_webhook
from ingest.state import IngestState
from sluice.db import create_engine
from sluice.settings import Settings

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

log = structlog.get_logger(__name__)


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or Settings()
    database_url = settings.require_database_url()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        engine = create_engine(
            database_url, pool_size=settings.db_pool_size, application_name="sluice-ingest"
        )
        writer = GroupCommitWriter(
            engine, writers=settings.ingest_writers, batch_max=settings.ingest_batch_max
        )
        await writer.start()
        app.state.ingest = IngestState(settings=settings, engine=engine, writer=writer)
        if not settings.square_verification_configured:
            log.warning(
                "square.verification_not_configured",
                detail="SQUARE_WEBHOOK_SIGNATURE_KEYS or SQUARE_WEBHOOK_URL is not set; "
                "POST /webhooks/square refuses every request",
            )
        try:
            yield
        finally:
            await writer.stop()
            await engine.dispose()

    return Starlette(
        routes=[
            Route("/webhooks/square", square_webhook, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
