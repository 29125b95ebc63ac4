"""What every console handler shares: the templates, the login guard, the form reader, flashes.

Templates escape every value (Jinja's autoescape): a provider payload holding `<script>` is
shown as text. Every answer carries a Content-Security-Policy that lets a page load only the
console's own script and style, so even a value that escaped escaping could run nothing.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jinja2 import Environment, FileSystemLoader
from starlette.datastructures import QueryParams
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.templating import Jinja2Templates

from recovery.console.charts import bars
from recovery.console.session import PREFIX, actor, csrf_ok, csrf_token
from sluice.body import BodyTooLargeError, read_limited
from sluice.query import ParameterError, Query

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from datetime import datetime, timedelta

    from starlette.requests import Request

HERE = Path(__file__).parent
_REQUEST_KEY = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}(-[a-z0-9-]{1,40})?"
)
MAX_FORM_BYTES = 16 * 1024
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def _age(delta: timedelta | None) -> str:
    if delta is None:
        return "—"
    seconds = int(delta.total_seconds())
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 172_800:
        return f"{seconds // 3600} h"
    return f"{seconds // 86_400} days"


def _when(value: datetime | str | None) -> str:
    if value is None:
        return "—"
    text = value if isinstance(value, str) else value.isoformat()
    return text.replace("T", " ")[:19] + " UTC" if text else "—"


# Autoescape on for every template, whatever its name.
templates = Jinja2Templates(
    env=Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=True)
)
templates.env.globals.update(prefix=PREFIX, bars=bars)
templates.env.filters.update(age=_age, when=_when)


def render(request: Request, name: str, context: dict[str, Any], status: int = 200) -> HTMLResponse:
    flash = request.session.pop("flash", None) if "session" in request.scope else None
    base = {
        "request": request,
        "who": actor(request),
        "csrf": csrf_token(request),
        "flash": flash,
        "request_key": str(uuid.uuid4()),
    }
    response: HTMLResponse = templates.TemplateResponse(
        request, name, {**base, **context}, status_code=status
    )
    response.headers.update(SECURITY_HEADERS)
    return response


def flash(request: Request, message: str) -> None:
    if "session" in request.scope:
        request.session["flash"] = message


def back(request: Request, path: str, message: str | None = None) -> Response:
    """Post/Redirect/Get: a reload of the page shown after an action does not repeat it."""
    if message:
        flash(request, message)
    return RedirectResponse(f"{PREFIX}{path}", status_code=303)


def refusal(request: Request, status: int, message: str) -> HTMLResponse:
    return render(request, "refusal.html", {"status": status, "message": message}, status)


def page(
    handler: Callable[[Request], Awaitable[Response]],
) -> Callable[[Request], Awaitable[Response]]:
    """A page for someone logged in: others are sent to the login page."""

    async def guarded(request: Request) -> Response:
        if request.app.state.admin_token is None:
            return refusal(request, 503, "SLUICE_ADMIN_TOKEN is not set: the console is closed.")
        if actor(request) is None:
            wanted = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(
                f"{PREFIX}/login?{QueryParams({'next': wanted})}", status_code=303
            )
        try:
            return await handler(request)
        except ParameterError as exc:
            return refusal(request, 400, str(exc))

    return guarded


def action(
    handler: Callable[[Request, Query, str], Awaitable[Response]],
) -> Callable[[Request], Awaitable[Response]]:
    """A form's POST: logged in, its CSRF token right, its fields read; the handler gets the
    form and who acts."""

    async def guarded(request: Request) -> Response:
        if request.app.state.admin_token is None:
            return refusal(request, 503, "SLUICE_ADMIN_TOKEN is not set: the console is closed.")
        who = actor(request)
        if who is None:
            return refusal(request, 401, "Log in first: this session has ended.")
        try:
            form = await read_form(request)
        except BodyTooLargeError:
            return refusal(request, 413, f"A form is at most {MAX_FORM_BYTES} bytes.")
        if not csrf_ok(request, form.value("csrf")):
            return refusal(request, 403, "This form is stale or not from the console: reload it.")
        try:
            return await handler(request, form, who)
        except ParameterError as exc:
            return refusal(request, 400, str(exc))

    return guarded


async def read_form(request: Request) -> Query:
    """An urlencoded form, bounded, read through the same parameter reader as query strings."""
    body = await read_limited(
        request.receive, request.headers.get("content-length"), MAX_FORM_BYTES
    )
    try:
        fields = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ParameterError("form", "is not UTF-8") from exc
    return given(QueryParams(fields))


def given(params: QueryParams) -> Query:
    """A browser sends a form's empty fields too: an empty field is one not given."""
    return Query(QueryParams([(k, v) for k, v in params.multi_items() if v != ""]))


def request_key(form: Query) -> str:
    """The form's own key (a UUID the page put in it, and the form's name on a page of several):
    one action per key."""
    given = form.value("request_key") or ""
    if _REQUEST_KEY.fullmatch(given) is None:
        raise ParameterError("request_key", "missing: reload the page and submit again")
    return given
