"""Jobs: reads with ETags, staff changes with enforced work-status transitions, bulk status.

A status change appends `{from, to, by, at}` to `status_history` in the same statement; `at` is
the transaction's time. Rows are locked (FOR UPDATE, in id order for bulk changes) before the
transition is checked, so two staff members cannot both move a job from the same status.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import text

from api.announce import announce, change_message
from api.paging import decode_cursor, encode_cursor, paged_response
from api.responses import ApiError, etag_response, path_id, row_etag
from api.transitions import allowed_from, is_allowed
from api.writes import check_precondition, row_endpoint, state_change
from schemas.app_api import MAX_ID_LENGTH, AppChange, BulkStatus, JobPatch
from schemas.projections import JOBS
from sluice.db import transaction
from sluice.jsontext import json_text
from sluice.query import Query

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection
    from starlette.requests import Request
    from starlette.responses import Response

MAX_LIST = 1000
DEFAULT_LIST = 500
_JSON_COLUMNS = frozenset({"checklist", "photos_meta", "receipt_photos", "payment", "vehicle_info"})

# The list's order, a job with no start last; every list index leads with a filter column (or
# nothing) and then this key, so each filter reads one index range in order.
SORT_KEY = "COALESCE(start_at, 'infinity'::timestamptz)"
# Query parameter -> column, each with an index (filter, SORT_KEY, booking_id): migration 0014.
JOB_FILTERS = {
    "location": "location_id",
    "status": "status",
    "work_status": "work_status",
    "team_member": "team_member_id",
    "customer": "customer_id",
}
_ONE = text("SELECT * FROM jobs WHERE booking_id = :id")
_LOCK = text("SELECT *, now() AS txn_now FROM jobs WHERE booking_id = :id FOR UPDATE")
_LOCK_MANY = text(
    "SELECT booking_id, work_status, now() AS txn_now FROM jobs "
    "WHERE booking_id = ANY(CAST(:ids AS text[])) ORDER BY booking_id FOR UPDATE"
)
_HISTORY = (
    "status_history = status_history || jsonb_build_array(jsonb_build_object("
    "'from', work_status, 'to', CAST(:work_status AS text), 'by', CAST(:actor AS text), "
    "'at', now()))"
)
_BULK = text(
    f"UPDATE jobs SET work_status = :work_status, {_HISTORY} "  # noqa: S608 - constant SQL
    "WHERE booking_id = ANY(CAST(:ids AS text[])) AND work_status <> :work_status"
)
_MANY = text("SELECT * FROM jobs WHERE booking_id = ANY(CAST(:ids AS text[])) ORDER BY booking_id")


def _row(row: Any) -> dict[str, Any]:  # noqa: ANN401 - a SQLAlchemy row
    data = dict(row._mapping)  # noqa: SLF001 - SQLAlchemy's public row mapping
    data.pop("txn_now", None)
    return data


def _list_query(query: Query) -> tuple[str, dict[str, Any]]:
    """The page's SQL, with only the filters given (a generic `:x IS NULL OR ...` plan would not
    use their indexes), and its parameters."""
    where: list[str] = []
    params: dict[str, Any] = {}
    # ISO dates are midnight UTC; date-times need a zone.
    low = query.instant("from", dates=True)
    high = query.instant("to", dates=True)
    if low is not None:
        where.append(f"{SORT_KEY} >= :from_")
        params["from_"] = low
    if high is not None:
        where.append(f"{SORT_KEY} < :to")
        params["to"] = high
    for name, column in JOB_FILTERS.items():
        value = query.text(name, max_length=MAX_ID_LENGTH)
        if value is not None:
            where.append(f"{column} = :{name}")
            params[name] = value
    after = decode_cursor(query.value("cursor"), 2)
    if after is not None:
        where.append(f"({SORT_KEY}, booking_id) > (CAST(:after_at AS timestamptz), :after_id)")
        params["after_at"], params["after_id"] = after
    params["limit"] = query.integer("limit", default=DEFAULT_LIST, minimum=1, maximum=MAX_LIST)
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    sql = f"SELECT * FROM jobs {clause} ORDER BY {SORT_KEY}, booking_id LIMIT :limit"  # noqa: S608 - declared columns
    return sql, params


async def list_jobs(request: Request) -> Response:
    sql, params = _list_query(Query(request.query_params))
    async with transaction(request.app.state.engine) as conn:
        jobs = [_row(r) for r in await conn.execute(text(sql), params)]
    cursor = None
    if len(jobs) == params["limit"]:
        last = jobs[-1]
        at = last["start_at"].isoformat() if last["start_at"] is not None else "infinity"
        cursor = encode_cursor([at, last["booking_id"]])
    return paged_response(request, {"jobs": jobs}, cursor)


async def get_job(request: Request) -> Response:
    async with transaction(request.app.state.engine) as conn:
        row = (await conn.execute(_ONE, {"id": path_id(request, "job")})).first()
    if row is None:
        return ApiError(404, "not_found", "no such job").response()
    job = _row(row)
    return etag_response(request, job, row_etag(job))


def _refused(booking_id: str, current: str, wanted: str) -> dict[str, Any]:
    return {"id": booking_id, "from": current, "to": wanted, "allowed": allowed_from(current)}


async def _patch(
    conn: AsyncConnection, body: JobPatch, key: str, booking_id: str, if_match: str | None
) -> tuple[int, Any]:
    row = (await conn.execute(_LOCK, {"id": booking_id})).first()
    if row is None:
        raise ApiError(404, "not_found", "no such job")
    check_precondition(if_match, _row(row))
    fields = body.model_fields_set - {"actor"}
    if not fields:
        raise ApiError(422, "nothing_to_change", "send at least one field besides actor")
    sets: list[str] = []
    params: dict[str, Any] = {"id": booking_id, "actor": body.actor}
    changed: list[str] = []
    if "work_status" in fields and body.work_status != row.work_status:
        wanted = str(body.work_status)
        if not is_allowed(row.work_status, wanted):
            raise ApiError(
                409,
                "transition_refused",
                f"a job cannot go from {row.work_status} to {wanted}",
                **_refused(booking_id, row.work_status, wanted),
            )
        # SET expressions read the old row: the history entry records the old status.
        sets += [_HISTORY, "work_status = :work_status"]
        params["work_status"] = wanted
        changed += ["work_status", "status_history"]
    for name in sorted(fields - {"work_status"}):
        value = body.model_dump(mode="json", include={name})[name]
        if name in _JSON_COLUMNS:
            sets.append(f"{name} = CAST(:{name} AS jsonb)")
            params[name] = None if value is None else json_text(value)
        else:
            sets.append(f"{name} = :{name}")
            params[name] = value
        changed.append(name)
    if not changed:
        return 200, _row(row)  # the status it already has: nothing to do, nothing to announce
    updated = (
        await conn.execute(
            text(f"UPDATE jobs SET {', '.join(sets)} WHERE booking_id = :id RETURNING *"),  # noqa: S608 - declared columns
            params,
        )
    ).one()
    change = AppChange(
        entity="jobs", id=booking_id, columns=changed, actor=body.actor, changed_at=row.txn_now
    )
    await announce(conn, [change_message(change, key)])
    return 200, _row(updated)


patch_job = row_endpoint("job", JobPatch, JOBS, _patch)


async def _bulk(
    conn: AsyncConnection, body: BulkStatus, key: str, _if_match: str | None
) -> tuple[int, Any]:
    rows = list(await conn.execute(_LOCK_MANY, {"ids": body.ids}))
    found = {r.booking_id: r for r in rows}
    missing = sorted(set(body.ids) - set(found))
    if missing:
        raise ApiError(404, "not_found", "some jobs do not exist; none changed", ids=missing)
    wanted = body.work_status
    refused = [
        _refused(r.booking_id, r.work_status, wanted)
        for r in rows
        if r.work_status != wanted and not is_allowed(r.work_status, wanted)
    ]
    if refused:
        raise ApiError(
            409,
            "transition_refused",
            "some jobs cannot take this status; none changed",
            refused=refused,
        )
    moving = [r.booking_id for r in rows if r.work_status != wanted]
    if moving:
        await conn.execute(_BULK, {"ids": moving, "work_status": wanted, "actor": body.actor})
        columns = ["work_status", "status_history"]
        at = rows[0].txn_now
        changes = [
            AppChange(entity="jobs", id=i, columns=columns, actor=body.actor, changed_at=at)
            for i in moving
        ]
        await announce(conn, [change_message(c, key) for c in changes])
    jobs = [_row(r) for r in await conn.execute(_MANY, {"ids": body.ids})]
    return 200, {"jobs": jobs, "changed": moving}


async def bulk_status(request: Request) -> Response:
    # Many rows, no one version: If-Match does not apply (PATCH a job's work_status for that).
    return await state_change(request, BulkStatus, JOBS, _bulk, one_row=False)
