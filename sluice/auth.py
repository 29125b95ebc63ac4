"""Bearer-token authentication as pure ASGI middleware, for the App API and the admin service.

`Authorization: Bearer <token>`, compared in constant time. Without a configured token every
guarded request gets 503 (closed, like the webhook endpoints without their keys). Paths under a
`delegated` prefix pass through: they check the same token themselves (the console takes it at
its login page, or as a bearer token, through `bearer_matches`).
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
        self,
        app: ASGIApp,
        token: str | None,
        setting: str,
        public: Collection[str] = (),
        delegated: tuple[str, ...] = (),
    ) -> None:
        self.app = app
        self._token = token.encode() if token is not None else None
        self._setting = setting  # the variable an operator sets, named in the 503
        self._public = frozenset(public)
        self._delegated = delegated

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path in self._public or path.startswith(self._delegated):
            await self.app(scope, receive, send)
            return
        if self._token is None:
            answer = _problem(503, "not_configured", f"{self._setting} is not set")
            await answer(scope, receive, send)
            return
        if not bearer_matches(Headers(scope=scope), self._token):
            answer = _problem(401, "unauthorized", "missing or wrong bearer token")
            answer.headers["WWW-Authenticate"] = 'Bearer realm="sluice"'
            await answer(scope, receive, send)
            return
        await self.app(scope, receive, send)


def bearer_matches(headers: Headers, token: bytes) -> bool:
    """Whether `Authorization: Bearer ...` carries `token` (compared in constant time)."""
    scheme, _, given = headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.encode(), token)


def _problem(status: int, error: str, detail: str) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status)
