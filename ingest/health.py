"""Liveness and readiness."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from starlette.responses import JSONResponse

from ingest.answers import Answer, problem
from sluice.db import ping
from sluice.health import healthz

__all__ = ["healthz", "readyz"]

if TYPE_CHECKING:
    from starlette.requests import Request

    from ingest.state import IngestState


async def readyz(request: Request) -> Answer | JSONResponse:
    state: IngestState = request.app.state.ingest
    try:
        await asyncio.wait_for(ping(state.engine), timeout=3)
    except Exception:  # noqa: BLE001 - any failure means not ready
        return problem(503, "database unreachable", "not_ready")
    return JSONResponse({"status": "ready"})
