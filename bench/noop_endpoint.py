"""The no-op endpoint bench/ingest_bench.py measures beside sluice: the HTTP stack's ceiling.

A Starlette app that reads each POST's body and answers 200 with an empty body, served by uvicorn
with the same options and workers as the plain handler:

    python -m uvicorn noop_endpoint:app --app-dir bench --workers 2
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

if TYPE_CHECKING:
    from starlette.requests import Request


async def square_webhook(request: Request) -> Response:
    await request.body()
    return Response(status_code=200)


app = Starlette(routes=[Route("/webhooks/square", square_webhook, methods=["POST"])])
