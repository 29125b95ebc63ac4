"""`GET /api/changes`: every committed change to a projection row, as Server-Sent Events.

Triggers on the projection tables (migration 0006) log each changed row into
`projection_changes` in the writer's own transaction (consumers, the API, anything later) and
NOTIFY on commit. One LISTEN connection per process wakes every open stream; each stream then
reads the log from its own cursor. A slow poll covers notifications lost while reconnecting.

Order without gaps: ids are handed out before commit, so a row with a smaller id can become
visible after a larger one. Rows are therefore read in (transaction id, id) order, and only
from transactions older than every transaction still running
(`pg_snapshot_xmin(pg_current_snapshot())`): those rows can no longer change, so a cursor that
moves past them never skips one. A long transaction delays the stream while it runs.

The SSE `id` of each event is the log row's id; a client that reconnects with `Last-Event-ID`
resumes right after it. If that row was pruned (older than SLUICE_CHANGES_RETENTION_SECONDS)
the stream starts with a `reset` event: reload, then follow the stream. `Last-Event-ID: 0`
replays the whole log, as far back as it is kept.

`entity=jobs|leads`, and with it `key=<booking or record id>`, narrow a stream to one table or
one row. The cursor still moves over every row read, matching or not, so a narrow stream reads
the log once, as a wide one does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import text
from starlette.responses import StreamingResponse

from api.idempotency import prune_expired
from api.responses import jsonable, single_header
from sluice.db import DatabaseUnavailableError, transaction
from sluice.listen import CommitListener
from sluice.query import BIGINT_MAX, ParameterError, Query, whole_number

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from sqlalchemy.ext.asyncio import AsyncEngine
    from starlette.requests import Request
    from starlette.responses import Response

log = structlog.get_logger(__name__)

CHANNEL = "sluice_projection_changes"
POLL_SECONDS = 0.5
HEARTBEAT_SECONDS = 15.0
READ_MAX = 500
HOUSEKEEPING_SECONDS = 600.0

_READ = text(
    """
    SELECT id, txid::text AS txid, entity, entity_id, op, data, changed_at
    FROM projection_changes
    WHERE (txid, id) > (CAST(:txid AS xid8), :id)
      AND txid < pg_snapshot_xmin(pg_current_snapshot())
    ORDER BY txid, id
    LIMIT :limit
    """
)
_NOW = text("SELECT pg_snapshot_xmin(pg_current_snapshot())::text")
_RESUME = text("SELECT txid::text FROM projection_changes WHERE id = :id")
_PRUNE = text(
    "DELETE FROM projection_changes WHERE changed_at < now() - make_interval(secs => :seconds)"
)

Cursor = tuple[str, int]
# The projections the log holds (migration 0006's triggers).
ENTITIES = ("jobs", "leads")
# Before every transaction id: the start of the log.
_FIRST: Cursor = ("0", 0)


@dataclass(frozen=True, slots=True)
class Narrowing:
    entity: str | None = None
    key: str | None = None

    def holds(self, row: Any) -> bool:  # noqa: ANN401 - a SQLAlchemy row
        return (self.entity is None or row.entity == self.entity) and (
            self.key is None or row.entity_id == self.key
        )


class ChangeFeed:
    """Wakes every stream of this process when a projection change commits."""

    def __init__(self, engine: AsyncEngine, database_url: str, retention_seconds: int) -> None:
        self.engine = engine
        self._listener = CommitListener(database_url, CHANNEL, "sluice-api-listen")
        self._retention_seconds = retention_seconds
        self._event = asyncio.Event()

    @property
    def event(self) -> asyncio.Event:
        """Set at the next notification; take it before reading, so no wake is missed."""
        return self._event

    async def run(self) -> None:
        tasks = [
            asyncio.create_task(self._listener.run()),
            asyncio.create_task(self._housekeeping()),
        ]
        try:
            while True:
                await self._listener.wake.wait()
                self._listener.wake.clear()
                woken, self._event = self._event, asyncio.Event()
                woken.set()
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _housekeeping(self) -> None:
        while True:
            try:
                async with transaction(self.engine) as conn:
                    changes = await conn.execute(_PRUNE, {"seconds": self._retention_seconds})
                    keys = await prune_expired(conn)
                log.debug("api.pruned", changes=changes.rowcount, idempotency_keys=keys)
            except DatabaseUnavailableError as exc:
                log.warning("api.prune_failed", error=str(exc))
            await asyncio.sleep(HOUSEKEEPING_SECONDS)

    async def start_cursor(self, last_event_id: int | None) -> tuple[Cursor, bool]:
        """Where a stream starts, and whether the client must reload (its event was pruned)."""
        if last_event_id == 0:
            return _FIRST, False
        async with transaction(self.engine) as conn:
            if last_event_id is not None:
                txid = (await conn.execute(_RESUME, {"id": last_event_id})).scalar()
                if txid is not None:
                    return (txid, last_event_id), False
            xmin = (await conn.execute(_NOW)).scalar_one()
        # Everything older than every running transaction is the past the client has loaded.
        return (xmin, 0), last_event_id is not None

    async def read(self, cursor: Cursor) -> list[Any]:
        async with transaction(self.engine) as conn:
            result = await conn.execute(
                _READ, {"txid": cursor[0], "id": cursor[1], "limit": READ_MAX}
            )
            return list(result)


def _event(row: Any) -> str:  # noqa: ANN401 - a SQLAlchemy row
    data = {
        "id": row.id,
        "entity": row.entity,
        "key": row.entity_id,
        "op": row.op,
        "changed_at": row.changed_at,
        "row": row.data,
    }
    body = json.dumps(jsonable(data), separators=(",", ":"))
    return f"id: {row.id}\nevent: change\ndata: {body}\n\n"


async def _stream(
    request: Request, feed: ChangeFeed, cursor: Cursor, reset: bool, narrowing: Narrowing
) -> AsyncIterator[str]:
    yield f"retry: {int(POLL_SECONDS * 2000)}\n\n"
    if reset:
        yield 'event: reset\ndata: {"reason":"Last-Event-ID is no longer kept; reload"}\n\n'
    beat = time.monotonic()
    while not await request.is_disconnected():
        woken = feed.event
        try:
            rows = await feed.read(cursor)
        except DatabaseUnavailableError:
            rows = []
        for row in rows:
            if narrowing.holds(row):
                yield _event(row)
            cursor = (row.txid, row.id)
        if len(rows) == READ_MAX:
            continue
        if time.monotonic() - beat >= HEARTBEAT_SECONDS:
            beat = time.monotonic()
            yield ": keep-alive\n\n"
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(woken.wait(), POLL_SECONDS)


def last_event_id(request: Request) -> int | None:
    """Where to resume: the `Last-Event-ID` header an EventSource sends when it reconnects, else
    the `last_event_id` query parameter (for clients that cannot set headers). An event id is a
    log row's bigserial id; empty means none. Both are checked when both are sent."""
    header = single_header(request, "Last-Event-ID")
    query = Query(request.query_params).value("last_event_id")
    header_id = (
        whole_number("Last-Event-ID", header, minimum=0, maximum=BIGINT_MAX, place="header")
        if header
        else None
    )
    query_id = (
        whole_number("last_event_id", query, minimum=0, maximum=BIGINT_MAX) if query else None
    )
    return header_id if header_id is not None else query_id


def narrowing(request: Request) -> Narrowing:
    query = Query(request.query_params)
    entity = query.text("entity")
    key = query.text("key")
    if entity is not None and entity not in ENTITIES:
        raise ParameterError("entity", f"choose one of {', '.join(ENTITIES)}")
    if key is not None and entity is None:
        raise ParameterError("key", "give entity too: a key is a booking or a record id")
    return Narrowing(entity, key)


async def changes(request: Request) -> Response:
    feed: ChangeFeed = request.app.state.feed
    narrow = narrowing(request)
    cursor, reset = await feed.start_cursor(last_event_id(request))
    return StreamingResponse(
        _stream(request, feed, cursor, reset, narrow),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
