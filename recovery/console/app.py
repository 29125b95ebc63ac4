"""The console's routes under /console/, served by `sluice admin` beside its JSON endpoints.

Pages are rendered on the server (Jinja templates) and work without script; one small script of
ours (static/console.js) keeps a page live through Server-Sent Events (`/console/stream`): the
overview's figures are redrawn every few seconds, new events are added to the top of the list,
and the recovery page follows runs and pauses. No asset comes from anywhere else, so the
console works air-gapped.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from typing import TYPE_CHECKING, Any

from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from consumers.registry import CONSUMERS
from recovery.console import actions, pages
from recovery.console.events import list_events, parse_cursor
from recovery.console.overview import read_overview
from recovery.console.session import (
    MAX_NAME_LENGTH,
    PREFIX,
    actor,
    csrf_ok,
    start_session,
    token_matches,
)
from recovery.console.web import (
    HERE,
    SECURITY_HEADERS,
    given,
    page,
    read_form,
    refusal,
    render,
    templates,
)
from recovery.pause import paused_components
from recovery.runs import recent_runs
from sluice.body import BodyTooLargeError
from sluice.db import DatabaseUnavailableError
from sluice.query import MAX_TEXT_LENGTH, ParameterError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from starlette.requests import Request

# How often a live page is brought up to date, by what it shows.
LIVE_SECONDS = {"overview": 3.0, "events": 1.0, "recovery": 2.0}
# A stream ends after this long and the browser's EventSource opens a new one at once (rows
# resume from Last-Event-ID): a stopping admin service waits for no stream longer than this, and
# a session that expired stops being served.
STREAM_SECONDS = 20


def _safe_next(value: str | None) -> str:
    """Only a path of the console itself: never an address elsewhere."""
    if value and value.startswith(f"{PREFIX}/") and not value.startswith("//"):
        return value
    return f"{PREFIX}/"


async def login_page(request: Request) -> Response:
    if request.app.state.admin_token is None:
        return refusal(request, 503, "SLUICE_ADMIN_TOKEN is not set: the console is closed.")
    wanted = _safe_next(request.query_params.get("next"))
    return render(request, "login.html", {"next": wanted, "error": None})


async def login(request: Request) -> Response:
    if request.app.state.admin_token is None:
        return refusal(request, 503, "SLUICE_ADMIN_TOKEN is not set: the console is closed.")
    try:
        form = await read_form(request)
        token = form.text("token", max_length=1024) or ""
        name = (form.text("name", max_length=MAX_NAME_LENGTH) or "").strip()
    except (BodyTooLargeError, ParameterError) as exc:
        return refusal(request, 400, str(exc) or "the form is too large")
    wanted = _safe_next(form.value("next"))
    if not token_matches(request, token):
        context = {"next": wanted, "error": "That is not the admin token."}
        return render(request, "login.html", context, status=401)
    start_session(request, "".join(c for c in name if c.isprintable()) or "operator")
    return RedirectResponse(wanted, status_code=303)


async def logout(request: Request) -> Response:
    form = await read_form(request)
    if actor(request) is not None and csrf_ok(request, form.value("csrf")):
        request.session.clear()
    return RedirectResponse(f"{PREFIX}/login", status_code=303)


def _sse(kind: str, data: dict[str, Any], event_id: str | None = None) -> str:
    # The id comes back as Last-Event-ID when the browser reconnects: no row is sent twice.
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


async def _fragment(request: Request, view: str, state: dict[str, Any]) -> str | None:
    """What is new for a live `view`, as one SSE message, or None when nothing is."""
    engine = request.app.state.engine
    if view == "overview":
        figures = await read_overview(engine, request.app.state.lag.sample)
        html = templates.get_template("_overview.html").render(o=figures, prefix=PREFIX)
        return _sse("overview", {"html": html})
    if view == "events":
        where = pages.event_filter(given(request.query_params))
        newer = state.get("newer")
        if newer is None:
            return None
        rows, _ = await list_events(engine, dataclasses.replace(where, newer=newer))
        if not rows:
            return None
        state["newer"] = (rows[0].received_at, rows[0].id)
        html = templates.get_template("_event_rows.html").render(
            rows=rows, consumers=CONSUMERS, prefix=PREFIX
        )
        return _sse("rows", {"html": html, "count": len(rows)}, rows[0].cursor)
    runs = await recent_runs(engine, limit=10)
    paused = await paused_components(engine)
    running = sorted(t.get_name() for t in request.app.state.tasks if not t.done())
    html = templates.get_template("_runs.html").render(
        runs=runs, paused=paused, running=running, prefix=PREFIX
    )
    return _sse("recovery", {"html": html})


async def _stream(request: Request, view: str, state: dict[str, Any]) -> AsyncIterator[str]:
    yield "retry: 2000\n\n"
    interval = LIVE_SECONDS[view]
    loop = asyncio.get_running_loop()
    ends = loop.time() + STREAM_SECONDS
    while loop.time() < ends and not await request.is_disconnected():
        try:
            message = await _fragment(request, view, state)
        except DatabaseUnavailableError:
            message = _sse("unavailable", {"detail": "the database is unreachable; retrying"})
        yield message or ": nothing new\n\n"
        await asyncio.sleep(interval)


@page
async def stream(request: Request) -> Response:
    query = given(request.query_params)
    view = query.text("view") or "overview"
    if view not in LIVE_SECONDS:
        raise ParameterError("view", f"choose one of {', '.join(LIVE_SECONDS)}")
    resumed = request.headers.get("last-event-id") or query.value("newer") or ""
    state: dict[str, Any] = {"newer": parse_cursor(resumed[:MAX_TEXT_LENGTH])}
    if view == "events":
        pages.event_filter(query)  # a bad filter is a 400 now, not a broken stream later
    return StreamingResponse(
        _stream(request, view, state),
        media_type="text/event-stream",
        headers={**SECURITY_HEADERS, "X-Accel-Buffering": "no"},
    )


async def home(_: Request) -> Response:
    return RedirectResponse(f"{PREFIX}/", status_code=308)


CONSOLE_ROUTES = [
    Route(PREFIX, home, methods=["GET"]),
    Mount(
        PREFIX,
        routes=[
            Route("/", pages.overview, methods=["GET"]),
            Route("/login", login_page, methods=["GET"]),
            Route("/login", login, methods=["POST"]),
            Route("/logout", logout, methods=["POST"]),
            Route("/events", pages.events, methods=["GET"]),
            Route("/events/{ref}", pages.event, methods=["GET"]),
            Route("/events/{ref}/body", pages.stored_body, methods=["GET"]),
            Route("/dead-letters", pages.dead_letters, methods=["GET"]),
            Route("/dead-letters/{id}", pages.dead_letter, methods=["GET"]),
            Route("/dead-letters/redrive", actions.redrive_letters, methods=["POST"]),
            Route("/dead-letters/discard", actions.discard_letters, methods=["POST"]),
            Route("/recovery", pages.recovery, methods=["GET"]),
            Route("/replay", actions.replay, methods=["POST"]),
            Route("/reconcile/{source}", actions.reconcile_source, methods=["POST"]),
            Route("/pause/{component}", actions.pause_component, methods=["POST"]),
            Route("/resume/{component}", actions.resume_component, methods=["POST"]),
            Route("/audit", pages.audit, methods=["GET"]),
            Route("/stream", stream, methods=["GET"]),
            Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        ],
    ),
]
