"""Who may use the console, and proof that a form came from it.

Logging in takes `SLUICE_ADMIN_TOKEN` once and keeps a signed session cookie (Starlette's
SessionMiddleware, itsdangerous underneath): HttpOnly, SameSite=Strict, Secure unless
`SLUICE_CONSOLE_SECURE_COOKIE=false`, sent only under /console/, and refused after
`SLUICE_CONSOLE_SESSION_MINUTES`. Its signing key is derived from the admin token, so a new token
ends every session. Scripts may send `Authorization: Bearer` instead.

Every form carries the session's CSRF token (compared in constant time) and a request key of its
own: an action is done once per key (recovery/console/actions.py), so a repeated submit is
harmless.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import TYPE_CHECKING

from starlette.middleware.sessions import SessionMiddleware

from sluice.auth import bearer_matches

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.types import ASGIApp

    from sluice.settings import Settings

PREFIX = "/console"
COOKIE = "sluice_console"
MAX_NAME_LENGTH = 64


def session_middleware(app: ASGIApp, settings: Settings, token: str | None) -> ASGIApp:
    """`app` with the console's session cookie; no cookie at all without an admin token."""
    if token is None:
        return app
    key = hmac.new(token.encode(), b"sluice console session", hashlib.sha256).hexdigest()
    return SessionMiddleware(
        app,
        secret_key=key,
        session_cookie=COOKIE,
        max_age=settings.console_session_minutes * 60,
        path=PREFIX,
        same_site="strict",
        https_only=settings.console_secure_cookie,
    )


def start_session(request: Request, name: str) -> None:
    request.session.clear()
    request.session.update({"who": name, "csrf": secrets.token_urlsafe(32)})


def actor(request: Request) -> str | None:
    """Who is logged in (`console:<name>`), `console:bearer` for a script, or None."""
    token: bytes | None = request.app.state.admin_token
    if token is None:
        return None
    if bearer_matches(request.headers, token):
        return "console:bearer"
    who = request.session.get("who") if "session" in request.scope else None
    return f"console:{who}" if isinstance(who, str) else None


def csrf_token(request: Request) -> str:
    if "session" not in request.scope:
        return ""
    token = request.session.get("csrf")
    return token if isinstance(token, str) else ""


def csrf_ok(request: Request, given: str | None) -> bool:
    """A bearer-token client proves itself without a form; a browser by its session's token."""
    token: bytes | None = request.app.state.admin_token
    if token is not None and bearer_matches(request.headers, token):
        return True
    expected = csrf_token(request)
    return bool(expected) and given is not None and hmac.compare_digest(given, expected)


def token_matches(request: Request, given: str) -> bool:
    token: bytes | None = request.app.state.admin_token
    return token is not None and hmac.compare_digest(given.encode(), token)
