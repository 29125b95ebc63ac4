"""Bearer-token authentication for the App API, as pure ASGI middleware.

`Authorization: Bearer <SLUICE_API_TOKEN>`, compared in constant time. Without a configured
token every guarded request gets 503 (closed, like the webhook endpoints without their keys).
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING

from starlette.datastructures import Headers

from api.responses import problem

if TYPE_CHECKING:
    from collections.abc import Collection

    from starlette.types import ASGIApp, Receive, Scope, Send


class BearerAuth:
    def __init__(self, app: ASGIApp, token: str | None, public: Collection[str] = ()) -> None:
        self.app = app
        self._token = token.encode() if token is not None else None
        self._public = frozenset(public)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self._public:
            await self.app(scope, receive, send)
            return
        if self._token is None:
            answer = problem(503, "not_configured", "SLUICE_API_TOKEN is not set")
            await answer(scope, receive, send)
            return
        scheme, _, given = Headers(scope=scope).get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), self._token):
            answer = problem(401, "unauthorized", "missing or wrong bearer token")
            answer.headers["WWW-Authenticate"] = 'Bearer realm="sluice"'
            await answer(scope, receive, send)
            return
        await self.app(scope, receive, send)
