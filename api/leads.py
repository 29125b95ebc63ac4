"""Leads: reads with ETags and the record's write-back status, claim / unclaim, notes.

Every change stamps the changed app-owned fields and marks the lead pending for the write-back
to Airtable (consumers/lead_sync.py), in the same transaction as the change and its outbox row.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import text

from api.announce import announce, change_message
from api.paging import decode_cursor, encode_cursor, paged_response
from api.responses import ApiError, etag_response, path_id, row_etag
from api.writes import check_precondition, row_endpoint
from consumers.lead_sync import (
    SYNC_STATES,
    open_conflicts,
    resolve_conflicts,
    retry_failed,
    stamp_app_change,
    sync_status,
)
from schemas.app_api import MAX_ACTOR_LENGTH, AppChange, Claim, LeadPatch, Resolve, Retry, Unclaim
from schemas.leads import LEADS
from sluice.audit import write_audit
from sluice.db import transaction
from sluice.jsontext import json_text
from sluice.query import ParameterError, Query

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection
    from starlette.requests import Request
    from starlette.responses import Response

MAX_LIST = 1000
DEFAULT_LIST = 500

# Sync states a lead can be listed by (lead_sync.status; a lead never pushed has no row).
_ONE = text("SELECT * FROM leads WHERE record_id = :id")
_LOCK = text("SELECT *, now() AS txn_now FROM leads WHERE record_id = :id FOR UPDATE")
_CONFLICTS = text(
    """
    SELECT column_name, app_value, app_changed_at, airtable_value, airtable_changed_at,
           detected_at, resolved_at, resolved_by, resolution
    FROM sync_conflicts WHERE record_id = :id ORDER BY id DESC LIMIT 20
    """
)
# Airtable cells the lead's columns could not hold (consumers/skipped_cells.py).
_SKIPPED = text(
    """
    SELECT field_id, column_name, value_json, reason, skipped_at
    FROM skipped_cells WHERE projection = 'leads' AND row_key = :id ORDER BY id DESC LIMIT 20
    """
)


def _lead(row: Any, sync: dict[str, Any] | None) -> dict[str, Any]:  # noqa: ANN401 - a row
    data = dict(row._mapping)  # noqa: SLF001 - SQLAlchemy's public row mapping
    data.pop("txn_now", None)
    data["sync"] = sync
    return data


async def _leads_with_sync(conn: AsyncConnection, rows: list[Any]) -> list[dict[str, Any]]:
    syncs = await sync_status(conn, [r.record_id for r in rows])
    return [_lead(r, dict(syncs[r.record_id]) if r.record_id in syncs else None) for r in rows]


def _list_query(query: Query) -> tuple[str, dict[str, Any]]:
    """The page's SQL with only the filters given, each backed by an index (migration 0014),
    in record id order."""
    where: list[str] = []
    params: dict[str, Any] = {}
    if not query.boolean("include_deleted"):
        where.append("l.deleted_at IS NULL")
    for name, column in (("claimed_by", "claimed_by"), ("lead_status", "lead_status")):
        value = query.text(name, max_length=MAX_ACTOR_LENGTH)
        if value is not None:
            where.append(f"l.{column} = :{name}")
            params[name] = value
    sync = query.text("sync_status")
    if sync is not None:
        if sync not in SYNC_STATES:
            raise ParameterError("sync_status", f"choose one of {', '.join(SYNC_STATES)}")
        where.append(
            "EXISTS (SELECT 1 FROM lead_sync AS s"
            " WHERE s.record_id = l.record_id AND s.status = :sync)"
        )
        params["sync"] = sync
    if query.given("conflict"):
        open_conflict = (
            "EXISTS (SELECT 1 FROM sync_conflicts AS c"
            " WHERE c.record_id = l.record_id AND c.resolved_at IS NULL)"
        )
        where.append(open_conflict if query.boolean("conflict") else f"NOT {open_conflict}")
    after = decode_cursor(query.value("cursor"), 1)
    if after is not None:
        where.append("l.record_id > :after")
        params["after"] = after[0]
    params["limit"] = query.integer("limit", default=DEFAULT_LIST, minimum=1, maximum=MAX_LIST)
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    sql = f"SELECT l.* FROM leads AS l {clause} ORDER BY l.record_id LIMIT :limit"  # noqa: S608 - declared columns
    return sql, params


async def list_leads(request: Request) -> Response:
    sql, params = _list_query(Query(request.query_params))
    async with transaction(request.app.state.engine) as conn:
        rows = list(await conn.execute(text(sql), params))
        leads = await _leads_with_sync(conn, rows)
    cursor = encode_cursor([leads[-1]["record_id"]]) if len(leads) == params["limit"] else None
    return paged_response(request, {"leads": leads}, cursor)


async def get_lead(request: Request) -> Response:
    record_id = path_id(request, "lead")
    async with transaction(request.app.state.engine) as conn:
        row = (await conn.execute(_ONE, {"id": record_id})).first()
        if row is None:
            return ApiError(404, "not_found", "no such lead").response()
        (lead,) = await _leads_with_sync(conn, [row])
        for name, statement in (("conflicts", _CONFLICTS), ("skipped_cells", _SKIPPED)):
            lead[name] = [
                dict(c._mapping)  # noqa: SLF001 - SQLAlchemy's public row mapping
                for c in await conn.execute(statement, {"id": record_id})
            ]
    return etag_response(request, lead, row_etag(lead))


async def _locked(conn: AsyncConnection, record_id: str, if_match: str | None) -> Any:  # noqa: ANN401 - a row
    row = (await conn.execute(_LOCK, {"id": record_id})).first()
    if row is None:
        raise ApiError(404, "not_found", "no such lead")
    check_precondition(if_match, _lead(row, None))
    if row.deleted_at is not None:
        raise ApiError(409, "deleted", "the lead was deleted in Airtable")
    return row


async def _write(
    conn: AsyncConnection,
    row: Any,  # noqa: ANN401 - the locked row
    values: dict[str, Any],
    actor: str,
    key: str,
) -> tuple[int, Any]:
    columns = sorted(values)
    sets = [f"{c} = :{c}" for c in columns]
    updated = (
        await conn.execute(
            text(f"UPDATE leads SET {', '.join(sets)} WHERE record_id = :id RETURNING *"),  # noqa: S608 - declared columns
            {**values, "id": row.record_id},
        )
    ).one()
    await stamp_app_change(conn, row.record_id, columns)
    change = AppChange(
        entity="leads", id=row.record_id, columns=columns, actor=actor, changed_at=row.txn_now
    )
    await announce(conn, [change_message(change, key)])
    (lead,) = await _leads_with_sync(conn, [updated])
    return 200, lead


async def _unchanged(conn: AsyncConnection, row: Any) -> tuple[int, Any]:  # noqa: ANN401
    (lead,) = await _leads_with_sync(conn, [row])
    return 200, lead


async def _claim(
    conn: AsyncConnection, body: Claim, key: str, record_id: str, if_match: str | None
) -> tuple[int, Any]:
    row = await _locked(conn, record_id, if_match)
    if row.claimed_by == body.actor:
        return await _unchanged(conn, row)
    if row.claimed_by is not None:
        raise ApiError(
            409, "already_claimed", f"claimed by {row.claimed_by}", claimed_by=row.claimed_by
        )
    values = {"claimed_by": body.actor, "claimed_at": row.txn_now}
    return await _write(conn, row, values, body.actor, key)


async def _unclaim(
    conn: AsyncConnection, body: Unclaim, key: str, record_id: str, if_match: str | None
) -> tuple[int, Any]:
    row = await _locked(conn, record_id, if_match)
    if row.claimed_by is None:
        return await _unchanged(conn, row)
    if row.claimed_by != body.actor and not body.force:
        raise ApiError(
            409,
            "claimed_by_another",
            f"claimed by {row.claimed_by}; send force: true to release it",
            claimed_by=row.claimed_by,
        )
    values = {"claimed_by": None, "claimed_at": None}
    return await _write(conn, row, values, body.actor, key)


async def _patch(
    conn: AsyncConnection, body: LeadPatch, key: str, record_id: str, if_match: str | None
) -> tuple[int, Any]:
    row = await _locked(conn, record_id, if_match)
    if "notes" not in body.model_fields_set:
        raise ApiError(422, "nothing_to_change", "send notes")
    return await _write(conn, row, {"notes": body.notes}, body.actor, key)


# Airtable's values, typed as the lead's columns are (jsonb_populate_record does the casts).
_ADOPT = (
    "UPDATE leads AS l SET {sets} "
    "FROM jsonb_populate_record(NULL::leads, CAST(:values AS jsonb)) AS r "
    "WHERE l.record_id = :id RETURNING l.*"
)


async def _resolve(
    conn: AsyncConnection, body: Resolve, key: str, record_id: str, if_match: str | None
) -> tuple[int, Any]:
    row = await _locked(conn, record_id, if_match)
    conflicts = await open_conflicts(conn, record_id, body.columns)
    if not conflicts:
        raise ApiError(409, "no_conflict", "the lead has no open conflict on those columns")
    columns = sorted(conflicts)
    await resolve_conflicts(conn, record_id, columns, keep=body.keep, actor=body.actor)
    detail = {"keep": body.keep, "columns": columns}
    await write_audit(
        conn, f"api:{body.actor}", "lead.resolve_conflict", f"lead:{record_id}", detail
    )
    if body.keep == "app":
        return await _unchanged(conn, row)  # stamped again: the pusher pushes the app's value
    sets = ", ".join(f"{c} = r.{c}" for c in columns)  # mapped app-owned columns only
    updated = (
        await conn.execute(
            text(_ADOPT.format(sets=sets)),
            {"id": record_id, "values": json_text(conflicts)},
        )
    ).one()
    change = AppChange(
        entity="leads", id=record_id, columns=columns, actor=body.actor, changed_at=row.txn_now
    )
    await announce(conn, [change_message(change, key)])
    (lead,) = await _leads_with_sync(conn, [updated])
    return 200, lead


async def _retry(
    conn: AsyncConnection, body: Retry, key: str, record_id: str, if_match: str | None
) -> tuple[int, Any]:
    del key  # the key only makes the call idempotent
    row = await _locked(conn, record_id, if_match)
    if not await retry_failed(conn, record_id):
        raise ApiError(409, "not_failed", "only a failed write-back can be retried")
    await write_audit(conn, f"api:{body.actor}", "lead.retry_push", f"lead:{record_id}", {})
    return await _unchanged(conn, row)


resolve_lead = row_endpoint("lead", Resolve, LEADS, _resolve)


retry_lead = row_endpoint("lead", Retry, LEADS, _retry)


claim_lead = row_endpoint("lead", Claim, LEADS, _claim)


unclaim_lead = row_endpoint("lead", Unclaim, LEADS, _unclaim)


patch_lead = row_endpoint("lead", LeadPatch, LEADS, _patch)
