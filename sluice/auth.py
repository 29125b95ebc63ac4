"""Bearer-token authentication as pure ASGI middleware, for the App API and the admin service.

`Authorization: Bearer <token>`, compared in constant time. Without a configured token every
guarded request gets 503 (closed, like the webhook endpoints without their keys).
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING

from starlette.datastructures import Headers
from starlette.responses import JSONResponse

if TYPE_CHECKING:
    from collections.abc import Collection

    from starlette.types import ASGIApp, Receive, Scope, Send


class BearerAuth:
    def __init__(
        self, app: ASGIApp, token: str | None, setting: str, public: Collection[str] = ()
    ) -> None:
        self.app = app
        self._token = token.encode() if token is not None else None
        self._setting = setting  # the variable an operator sets, named in the 503
        self._public = frozenset(public)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self._public:
            await self.app(scope, receive, send)
            return
        if self._token is None:
            answer = _problem(503, "not_configured", f"{self._setting} is not set")
            await answer(scope, receive, send)
            return
        scheme, _, given = Headers(scope=scope).get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), self._token):
            answer = _problem(401, "unauthorized", "missing or wrong bearer token")
            answer.headers["WWW-Authenticate"] = 'Bearer realm="sluice"'
            await answer(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _problem(status: int, error: str, detail: str) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status)
