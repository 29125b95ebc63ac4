"""Projecting Airtable record changes into tables (leads by default), column ownership honoured.

A created record carries every cell, a changed record only the cells that changed, so each
change writes only the source-owned columns it carries; app-owned columns are never written. A
destroyed record sets `deleted_at` and keeps the row. The row's version is Airtable's base
transaction number: a change older than the row's is ignored.

Our own write-back comes back from Airtable as a change by `publicApi` from our own user: an
echo. An echo writes nothing it does not have to (a change that carries only the app-owned
cells we wrote is dropped whole), and never counts as Airtable editing an app-owned field, so
it can neither bounce back out nor turn the app's newer values into conflicts. Anyone else's
edit of an app-owned field is stamped for the write-back's conflict check (consumers/lead_sync.py).

A reconcile sweep's snapshot (`RecordChange.sweep`) carries every mapped source cell and the row
version the sweep saw: it is written after the batch's webhook changes, as a snapshot upsert
(schemas/ownership.py), so it applies only while the row is still at that version. A change
that landed meanwhile wins; the next sweep catches whatever is still left.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import TYPE_CHECKING, Any

import structlog

from consumers.lead_sync import stamp_airtable_changes
from schemas.airtable_mapping import ResolvedTable, resolve
from schemas.leads import LEADS
from schemas.ownership import upsert

if TYPE_CHECKING:
    from collections.abc import Collection, Sequence
    from datetime import datetime

    from sqlalchemy.ext.asyncio import AsyncConnection

    from ingest.airtable_api import AirtableClient
    from schemas.airtable import RecordChange
    from schemas.airtable_mapping import TableMapping
    from schemas.ownership import Ownership

log = structlog.get_logger(__name__)


class MappingResolver:
    """Resolves each base's mapped tables and fields once, through the base schema API."""

    def __init__(self, client: AirtableClient, mappings: Sequence[TableMapping]) -> None:
        self._client = client
        self._mappings = tuple(mappings)
        self._bases: dict[str, dict[str, ResolvedTable]] = {}
        self._lock = asyncio.Lock()

    async def table(self, base_id: str, table_id: str) -> ResolvedTable | None:
        return (await self._base(base_id)).get(table_id)

    async def tables(self, base_id: str) -> list[ResolvedTable]:
        """Every mapped table the base has."""
        return list((await self._base(base_id)).values())

    async def _base(self, base_id: str) -> dict[str, ResolvedTable]:
        if base_id not in self._bases:
            async with self._lock:
                if base_id not in self._bases:
                    schema = await asyncio.to_thread(self._client.schema, base_id)
                    resolved = [resolve(m, base_id, schema) for m in self._mappings]
                    self._bases[base_id] = {r.table_id: r for r in resolved if r is not None}
        return self._bases[base_id]


def change_row(resolved: ResolvedTable, change: RecordChange) -> dict[str, Any]:
    """The columns one change writes, keyed as the projection's Ownership names them."""
    ownership = resolved.mapping.ownership
    row: dict[str, Any] = {
        ownership.key: change.record_id,
        "base_id": change.base_id,
        "table_id": change.table_id,
        ownership.version: change.base_transaction_number,
    }
    if change.action == "destroyed":
        row["deleted_at"] = change.timestamp
        return row
    row.update(resolved.columns(change.cells))
    if change.created_time is not None:  # a created record's, or a snapshot's
        row["airtable_created_at"] = change.created_time
    return row


def merge_in_order(ownership: Ownership, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per key: each change's columns applied over the earlier ones, in version order.

    Unlike picking the newest row, this keeps a column an earlier change carried and a later
    one did not (both are partial), and a sticky column keeps its first value.
    """
    merged: dict[str, dict[str, Any]] = {}
    for row in sorted(rows, key=lambda r: r[ownership.version]):
        current = merged.setdefault(row[ownership.key], {})
        for column, value in row.items():
            sticky = column in ownership.source_columns and ownership.is_sticky(column)
            if sticky and current.get(column) is not None:
                continue
            current[column] = value
    return list(merged.values())


def is_echo(change: RecordChange, own_user_ids: Collection[str]) -> bool:
    """Did we make this change ourselves, through the API (the write-back)?"""
    return change.change_source == "publicApi" and change.change_user_id in own_user_ids


# Columns every change row carries; a row with nothing else says nothing about the record.
_FRAME = frozenset({"base_id", "table_id"})


async def apply_record_changes(
    conn: AsyncConnection,
    resolver: MappingResolver,
    changes: Sequence[RecordChange],
    own_user_ids: Collection[str] = (),
) -> int:
    """Write `changes` into their projections in the caller's transaction; returns rows changed."""
    rows_by_projection: dict[Ownership, list[dict[str, Any]]] = defaultdict(list)
    # Per projection, the latest snapshot of each record in the batch.
    snapshots: dict[Ownership, dict[str, dict[str, Any]]] = defaultdict(dict)
    app_edits: list[tuple[str, str, datetime, Any]] = []
    for change in changes:
        resolved = await resolver.table(change.base_id, change.table_id)
        if resolved is None:
            continue  # a table no projection maps: recorded in inbound_events, not projected
        ownership = resolved.mapping.ownership
        row = change_row(resolved, change)
        if change.sweep is not None:
            snapshots[ownership][change.record_id] = row  # not an edit: nothing to stamp
            continue
        if is_echo(change, own_user_ids):
            if change.action == "changed" and not set(row) - _FRAME - {
                ownership.key,
                ownership.version,
            }:
                continue  # only the app-owned cells we wrote: nothing to apply
        elif change.action != "destroyed" and ownership is LEADS:
            app_edits.extend(
                (change.record_id, column, change.timestamp, value)
                for column, value in resolved.app_columns(change.cells).items()
            )
        rows_by_projection[ownership].append(row)
    await stamp_airtable_changes(conn, app_edits)
    changed = 0
    for ownership, rows in rows_by_projection.items():
        changed += await _upsert_by_columns(conn, ownership, merge_in_order(ownership, rows))
    # After the changes: a change in this batch can only make a snapshot lose, never the reverse.
    for ownership, by_record in snapshots.items():
        changed += await _upsert_by_columns(
            conn, ownership, list(by_record.values()), snapshot=True
        )
    return changed


async def _upsert_by_columns(
    conn: AsyncConnection,
    ownership: Ownership,
    rows: Sequence[dict[str, Any]],
    *,
    snapshot: bool = False,
) -> int:
    # One upsert per set of columns: a statement writes the same columns for every row.
    by_columns: dict[frozenset[str], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_columns[frozenset(row)].append(row)
    changed = 0
    for same_columns in by_columns.values():
        changed += len(await upsert(conn, ownership, same_columns, snapshot=snapshot))
    return changed
