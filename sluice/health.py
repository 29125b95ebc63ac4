"""Liveness, the same for every HTTP component: the process answers."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.responses import JSONResponse

if TYPE_CHECKING:
    from starlette.requests import Request


async def healthz(_: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})
