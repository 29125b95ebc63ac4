"""The console's pages: overview, events, one event, dead letters, recovery, audit log."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from starlette.datastructures import QueryParams
from starlette.responses import Response

from consumers.registry import CONSUMERS
from recovery.audit import read_audit
from recovery.console.events import OUTCOMES, EventFilter, event_page, list_events, parse_cursor
from recovery.console.overview import read_overview
from recovery.console.web import given, page, refusal, render
from recovery.dead_letters import list_dead_letters, read_dead_letter
from recovery.journey import find_body
from recovery.pause import COMPONENTS, paused_components
from recovery.runs import SOURCES, recent_runs
from sluice.query import MAX_TEXT_LENGTH, ParameterError, Query

if TYPE_CHECKING:
    from starlette.requests import Request


@page
async def overview(request: Request) -> Response:
    figures = await read_overview(request.app.state.engine, request.app.state.lag.sample)
    return render(request, "overview.html", {"o": figures, "live": "overview"})


def event_filter(query: Query) -> EventFilter:
    source = query.text("source") or None
    if source is not None and source not in SOURCES:
        raise ParameterError("source", f"choose one of {', '.join(SOURCES)}")
    outcome = query.text("outcome") or None
    if outcome is not None and outcome not in OUTCOMES:
        raise ParameterError("outcome", f"choose one of {', '.join(OUTCOMES)}")
    after = None
    if query.value("after"):
        after = parse_cursor(query.value("after") or "")
        if after is None:
            raise ParameterError("after", "not a page cursor of this console")
    return EventFilter(
        source=source,
        event_type=query.text("type") or None,
        entity=query.text("entity") or None,
        provider_event_id=query.text("provider_event_id") or None,
        since=_instant(query, "since"),
        until=_instant(query, "until"),
        outcome=outcome,
        after=after,
    )


def _instant(query: Query, name: str) -> Any:  # noqa: ANN401 - a datetime or None
    """A date, or a date-time; one without a zone (what a browser's picker sends) is UTC."""
    value = query.value(name)
    if not value:
        return None
    if "T" in value and not value.endswith("Z") and "+" not in value[10:] and "-" not in value[10:]:
        value += "+00:00"
    return Query(QueryParams({name: value})).instant(name, dates=True)


@page
async def events(request: Request) -> Response:
    query = given(request.query_params)
    where = event_filter(query)
    rows, more = await list_events(request.app.state.engine, where)
    kept = {k: v for k, v in request.query_params.items() if k != "after" and v}
    next_page = None
    if more and rows:
        next_page = str(QueryParams({**kept, "after": rows[-1].cursor}))
    return render(
        request,
        "events.html",
        {
            "rows": rows,
            "f": kept,
            "next_page": next_page,
            "first_page": str(QueryParams(kept)) if where.after else None,
            "sources": SOURCES,
            "outcomes": OUTCOMES,
            "consumers": CONSUMERS,
            "live": "events" if where.after is None else None,
            # Where the live list starts: the newest row shown, or now when none is.
            "newest": rows[0].cursor
            if rows
            else f"{datetime.now(UTC).isoformat()}_{uuid.UUID(int=0)}",
        },
    )


def _ref(request: Request) -> str:
    ref: str = request.path_params["ref"]
    if len(ref) > MAX_TEXT_LENGTH or "\x00" in ref:
        raise ParameterError("event", f"an event id is at most {MAX_TEXT_LENGTH} characters")
    return ref


def _no_event(request: Request, ref: str) -> Response:
    return refusal(request, 404, f"No stored event has the id {ref!r}.")


@page
async def event(request: Request) -> Response:
    ref = _ref(request)
    found = await event_page(request.app.state.engine, ref)
    if found is None:
        return _no_event(request, ref)
    return render(request, "event.html", {"e": found, "j": found.journey})


@page
async def stored_body(request: Request) -> Response:
    ref = _ref(request)
    body = await find_body(request.app.state.engine, ref)
    if body is None:
        return _no_event(request, ref)
    raw, provider_id = body
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in provider_id)[:100]
    # Byte for byte as received; an attachment, never rendered by the browser.
    return Response(
        raw,
        media_type="application/octet-stream",
        headers={
            "Content-Disposition": f'attachment; filename="{name or "event"}.json"',
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "no-store",
        },
    )


@page
async def dead_letters(request: Request) -> Response:
    query = given(request.query_params)
    consumer = query.text("consumer") or None
    if consumer is not None and consumer not in CONSUMERS:
        raise ParameterError("consumer", f"choose one of {', '.join(CONSUMERS)}")
    every = query.value("state") == "all"
    rows = await list_dead_letters(
        request.app.state.engine, pending_only=not every, limit=200, consumer=consumer
    )
    return render(
        request,
        "dead_letters.html",
        {"rows": rows, "consumer": consumer, "every": every, "consumers": CONSUMERS},
    )


@page
async def dead_letter(request: Request) -> Response:
    query = Query(QueryParams({"id": request.path_params["id"]}))
    letter_id = query.integer("id", default=0, minimum=1, maximum=2**63 - 1)
    found = await read_dead_letter(request.app.state.engine, letter_id)
    if found is None:
        return refusal(request, 404, f"No dead letter has the id {letter_id}.")
    row, message = found
    return render(request, "dead_letter.html", {"d": row, "m": message})


@page
async def recovery(request: Request) -> Response:
    engine = request.app.state.engine
    paused = {p["component"]: p for p in await paused_components(engine)}
    running = sorted(t.get_name() for t in request.app.state.tasks if not t.done())
    return render(
        request,
        "recovery.html",
        {
            "sources": SOURCES,
            "components": COMPONENTS,
            "paused": paused,
            "runs": await recent_runs(engine, limit=10),
            "running": running,
            "preview": request.session.get("replay_preview"),
            "ahead_days": request.app.state.settings.square_reconcile_ahead_days,
            "live": "recovery",
        },
    )


@page
async def audit(request: Request) -> Response:
    rows = await read_audit(request.app.state.engine, limit=200)
    return render(request, "audit.html", {"rows": rows})
