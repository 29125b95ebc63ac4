"""Write-back state of leads: which app-owned fields changed when, on which side, and the
per-record sync status (pending / synced / failed) the API shows.

Three writers, each in the transaction of its own change:

- the App API stamps `app_changed_at` on the fields staff changed and marks the record pending;
- the leads projection stamps `airtable_changed_at` when someone other than us changed an
  app-owned field in Airtable (our own writes coming back are echoes and stamp nothing);
- the write-back pusher records what it pushed, the conflicts it skipped, and the outcome.

A field needs pushing while `app_changed_at` is newer than `pushed_app_changed_at`; it is a
conflict, and skipped, when Airtable changed it later than the app did.

The reconciler's table sweep asks for pushes again (`push_again`) when Airtable does not hold an
app-owned value, through the same stamp and pending mark: the pusher and its conflict check
decide as for any staff change.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import text

from sluice.jsontext import json_text
from sluice.tracing import current_traceparent

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping, Sequence
    from datetime import datetime

    from sqlalchemy.ext.asyncio import AsyncConnection

SyncStatus = str  # one of SYNC_STATES
SYNC_STATES = ("pending", "synced", "conflict", "failed")
# The states that still ask something of the pusher or of staff: few, whatever the leads.
OUTSTANDING = ("pending", "conflict", "failed")

_STAMP_APP = text(
    """
    INSERT INTO lead_sync_fields (record_id, column_name, app_changed_at)
    SELECT :record_id, c, now() FROM unnest(CAST(:columns AS text[])) AS c
    ON CONFLICT (record_id, column_name) DO UPDATE SET app_changed_at = EXCLUDED.app_changed_at
    """
)

# The trace of the change that asks (sluice/tracing.py), kept for the push; a mark without one
# (a consumer applying `app.changes`) keeps the one there.
_MARK_PENDING = text(
    """
    INSERT INTO lead_sync (record_id, status, next_attempt_at, updated_at, traceparent)
    SELECT r, 'pending', now(), now(), :traceparent FROM unnest(CAST(:ids AS text[])) AS r
    ON CONFLICT (record_id) DO UPDATE
    SET status = 'pending', next_attempt_at = now(), updated_at = now(),
        traceparent = COALESCE(EXCLUDED.traceparent, lead_sync.traceparent)
    """
)

_STAMP_AIRTABLE = text(
    """
    INSERT INTO lead_sync_fields (record_id, column_name, airtable_changed_at, airtable_value)
    SELECT v.record_id, v.column_name, v.at, v.value
    FROM jsonb_to_recordset(CAST(:rows AS jsonb))
        AS v(record_id text, column_name text, at timestamptz, value jsonb)
    ON CONFLICT (record_id, column_name) DO UPDATE
    SET airtable_changed_at = EXCLUDED.airtable_changed_at,
        airtable_value = EXCLUDED.airtable_value
    WHERE lead_sync_fields.airtable_changed_at IS NULL
       OR lead_sync_fields.airtable_changed_at < EXCLUDED.airtable_changed_at
    """
)


async def stamp_app_change(conn: AsyncConnection, record_id: str, columns: Sequence[str]) -> None:
    """Staff changed `columns` of a lead now: they need pushing to Airtable."""
    await conn.execute(_STAMP_APP, {"record_id": record_id, "columns": list(columns)})
    await mark_pending(conn, [record_id])


async def mark_pending(conn: AsyncConnection, record_ids: Collection[str]) -> None:
    if record_ids:
        params = {"ids": sorted(set(record_ids)), "traceparent": current_traceparent()}
        await conn.execute(_MARK_PENDING, params)


async def stamp_airtable_changes(
    conn: AsyncConnection, changes: Sequence[tuple[str, str, datetime, Any]]
) -> None:
    """(record id, column, when Airtable changed it, the value there) for app-owned fields."""
    if not changes:
        return
    rows = [
        {"record_id": r, "column_name": c, "at": at.isoformat(), "value": value}
        for r, c, at, value in changes
    ]
    await conn.execute(_STAMP_AIRTABLE, {"rows": json_text(rows)})


_FIELDS_OF = text(
    """
    SELECT record_id, column_name, app_changed_at, pushed_app_changed_at, airtable_changed_at
    FROM lead_sync_fields WHERE record_id = ANY(CAST(:ids AS text[]))
    """
)


@dataclass(frozen=True, slots=True)
class Unsynced:
    """An app-owned field of a lead whose value Airtable does not hold."""

    record_id: str
    column: str
    app_has_value: bool


async def push_again(conn: AsyncConnection, fields: Sequence[Unsynced]) -> set[str]:
    """Ask the write-back to push these fields again where the app's value is the one to keep;
    returns the leads asked. Per field:

    - never stamped by the app (set before the write-back existed, or by hand): stamped now, as
      a staff change, unless the app holds nothing there or Airtable's own edit of it is known;
    - stamped but not pushed (the push failed for good, or is still due): marked pending; the
      pusher's conflict check still applies;
    - pushed, and Airtable holds something else: someone changed it there after our push, so
      Airtable's value stands.
    """
    if not fields:
        return set()
    stamps = {
        (row.record_id, row.column_name): row
        for row in await conn.execute(_FIELDS_OF, {"ids": sorted({f.record_id for f in fields})})
    }
    to_stamp: dict[str, list[str]] = defaultdict(list)
    owed: set[str] = set()
    for field in fields:
        stamp = stamps.get((field.record_id, field.column))
        if stamp is None or stamp.app_changed_at is None:
            airtable_edited = stamp is not None and stamp.airtable_changed_at is not None
            if field.app_has_value and not airtable_edited:
                to_stamp[field.record_id].append(field.column)
        elif (
            stamp.pushed_app_changed_at is None
            or stamp.pushed_app_changed_at < stamp.app_changed_at
        ):
            owed.add(field.record_id)
    for record_id, columns in to_stamp.items():
        await stamp_app_change(conn, record_id, columns)
    await mark_pending(conn, owed - set(to_stamp))
    return owed | set(to_stamp)


# Through ix_lead_sync_status (status, record_id): the outstanding leads only, not every lead.
_OUTSTANDING_COUNTS = text(
    """
    SELECT status, count(*) AS n FROM lead_sync
    WHERE status = ANY(CAST(:states AS text[])) GROUP BY status
    """
)
_SYNCED = text("SELECT count(*) FROM lead_sync WHERE status = 'synced'")
# The planner's row count (autovacuum keeps it); negative while the table was never analyzed.
_ROWS_ESTIMATE = text("SELECT reltuples FROM pg_class WHERE oid = 'lead_sync'::regclass")


async def leads_by_state(
    conn: AsyncConnection, *, estimate_synced: bool
) -> tuple[dict[SyncStatus, int], bool]:
    """How many leads are in each sync state, and whether synced is an estimate. The outstanding
    ones are counted exactly; synced, nearly every lead, is counted too, or with
    `estimate_synced` taken from the table's row estimate less the outstanding ones, which costs
    the same for ten leads or ten million (counted after all while the table was never
    analyzed)."""
    result = await conn.execute(_OUTSTANDING_COUNTS, {"states": list(OUTSTANDING)})
    counts = dict.fromkeys(SYNC_STATES, 0) | {row.status: int(row.n) for row in result}
    if estimate_synced:
        rows = (await conn.execute(_ROWS_ESTIMATE)).scalar_one()
        if rows >= 0:
            counts["synced"] = max(int(rows) - sum(counts[s] for s in OUTSTANDING), 0)
            return counts, True
    counts["synced"] = int((await conn.execute(_SYNCED)).scalar_one())
    return counts, False


_SYNC_OF = text(
    """
    SELECT record_id, status, attempts, last_error, synced_at, updated_at, next_attempt_at
    FROM lead_sync WHERE record_id = ANY(CAST(:ids AS text[]))
    """
)


async def sync_status(
    conn: AsyncConnection, record_ids: Collection[str]
) -> dict[str, Mapping[str, Any]]:
    result = await conn.execute(_SYNC_OF, {"ids": list(record_ids)})
    return {
        row.record_id: {
            "status": row.status,
            "attempts": row.attempts,
            "last_error": row.last_error,
            "synced_at": row.synced_at,
            "updated_at": row.updated_at,
            "next_attempt_at": row.next_attempt_at,
        }
        for row in result
    }


_OPEN_CONFLICTS = text(
    """
    SELECT DISTINCT ON (c.column_name) c.column_name, f.airtable_value
    FROM sync_conflicts AS c
    LEFT JOIN lead_sync_fields AS f
      ON f.record_id = c.record_id AND f.column_name = c.column_name
    WHERE c.record_id = :id AND c.resolved_at IS NULL
      AND (CAST(:columns AS text[]) IS NULL OR c.column_name = ANY(CAST(:columns AS text[])))
    ORDER BY c.column_name, c.id DESC
    """
)
_RESOLVE = text(
    """
    UPDATE sync_conflicts SET resolved_at = now(), resolved_by = :actor, resolution = :keep
    WHERE record_id = :id AND resolved_at IS NULL AND column_name = ANY(CAST(:columns AS text[]))
    """
)
# Airtable's value adopted: nothing of the app's is left to push for these fields.
_ADOPTED = text(
    """
    UPDATE lead_sync_fields SET pushed_app_changed_at = app_changed_at
    WHERE record_id = :id AND column_name = ANY(CAST(:columns AS text[]))
    """
)
_SETTLE = text(
    """
    UPDATE lead_sync AS s SET status = 'synced', updated_at = now()
    WHERE s.record_id = :id AND s.status = 'conflict' AND NOT EXISTS (
        SELECT 1 FROM sync_conflicts AS c WHERE c.record_id = s.record_id AND c.resolved_at IS NULL
    )
    """
)
_RETRY = text(
    """
    UPDATE lead_sync SET status = 'pending', next_attempt_at = now(), attempts = 0,
        updated_at = now()
    WHERE record_id = :id AND status = 'failed' RETURNING record_id
    """
)


async def open_conflicts(
    conn: AsyncConnection, record_id: str, columns: Sequence[str] | None = None
) -> dict[str, Any]:
    """The lead's open conflicts (of `columns`, or all): column -> Airtable's latest value."""
    rows = await conn.execute(
        _OPEN_CONFLICTS, {"id": record_id, "columns": list(columns) if columns else None}
    )
    return {row.column_name: row.airtable_value for row in rows}


async def resolve_conflicts(
    conn: AsyncConnection, record_id: str, columns: Sequence[str], *, keep: str, actor: str
) -> None:
    """Close the conflicts of `columns`. Keeping the app's value stamps it again, so the pusher
    pushes it (now later than Airtable's change); adopting Airtable's (the caller wrote it into
    the row) leaves nothing to push. With no conflict left the lead is synced, or pending."""
    params = {"id": record_id, "columns": list(columns), "actor": actor, "keep": keep}
    await conn.execute(_RESOLVE, params)
    if keep == "app":
        await stamp_app_change(conn, record_id, columns)
    else:
        await conn.execute(_ADOPTED, params)
        await conn.execute(_SETTLE, params)


async def retry_failed(conn: AsyncConnection, record_id: str) -> bool:
    """Ask for a failed lead's push again now; False when it was not failed."""
    return (await conn.execute(_RETRY, {"id": record_id})).first() is not None
