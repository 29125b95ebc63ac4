"""Answers the same for every HTTP component: liveness (the process answers), and a 503 for a
database outage wherever in a request it surfaces."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.responses import JSONResponse

from sluice.db import DatabaseUnavailableError

if TYPE_CHECKING:
    from starlette.requests import Request


async def healthz(_: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def database_unavailable(_: Request, exc: Exception) -> JSONResponse:
    """Starlette exception handler: an outage is the server's state, never the request's fault,
    and says when to come back."""
    if not isinstance(exc, DatabaseUnavailableError):
        raise exc
    return JSONResponse(
        {"error": "unavailable", "detail": "the database is unavailable; retry"},
        status_code=503,
        headers={"Retry-After": "2"},
    )
