"""The admin app's event routes: one event's journey, and the events about one entity."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.responses import JSONResponse
from starlette.routing import Route

from recovery.journey import events_for_entity, find_journey
from sluice.query import MAX_TEXT_LENGTH, Query

if TYPE_CHECKING:
    from starlette.requests import Request


def problem(status: int, detail: str, code: str) -> JSONResponse:
    """The admin app's refusals: `{"error": code, "detail": why}`."""
    return JSONResponse({"error": code, "detail": detail}, status_code=status)


async def journey(request: Request) -> JSONResponse:
    ref = request.path_params["ref"]
    if len(ref) > MAX_TEXT_LENGTH or "\x00" in ref:
        return problem(400, f"an event id is at most {MAX_TEXT_LENGTH} characters", "bad_request")
    found = await find_journey(request.app.state.engine, ref)
    if found is None:
        return problem(404, f"no stored event has the id {ref!r}", "not_found")
    return JSONResponse(found)


async def by_entity(request: Request) -> JSONResponse:
    query = Query(request.query_params)
    entity = query.text("entity")
    limit = query.integer("limit", default=100, minimum=1, maximum=1000)
    if entity is None:
        return problem(400, "entity: give a booking, customer or record id", "bad_request")
    rows = await events_for_entity(request.app.state.engine, entity, limit=limit)
    return JSONResponse({"entity": entity, "outcomes": rows})


EVENT_ROUTES = [
    Route("/admin/events", by_entity, methods=["GET"]),
    Route("/admin/events/{ref}", journey, methods=["GET"]),
]
