"""Projecting Airtable record changes into tables (leads by default), column ownership honoured.

A created record carries every cell, a changed record only the cells that changed, so each
change writes only the source-owned columns it carries; app-owned columns are never written. A
destroyed record sets `deleted_at` and keeps the row. The row's version is Airtable's base
transaction number: a change older than the row's writes nothing and is reported stale, with the
row's version and its own (the journey keeps both).

Our own write-back comes back from Airtable as a change by `publicApi` from our own user: an
echo. An echo writes nothing it does not have to (a change that carries only the app-owned
cells we wrote is dropped whole), and never counts as Airtable editing an app-owned field, so
it can neither bounce back out nor turn the app's newer values into conflicts. Anyone else's
edit of an app-owned field is stamped for the write-back's conflict check (consumers/lead_sync.py).

A reconcile sweep's snapshot (`RecordChange.sweep`) carries every mapped source cell and the row
version the sweep saw: it is written after the batch's webhook changes, as a snapshot upsert
(consumers/upsert.py), so it applies only while the row is still at that version. A change
that landed meanwhile wins; the next sweep catches whatever is still left.

A cell its column cannot hold is skipped alone and recorded (consumers/skipped_cells.py). A
table deleted in Airtable (`TableDestroyed`) marks every row of it deleted, sticky like a
destroyed record's, staff data kept; it is written after the batch's record changes, so rows
the batch created are marked too.
"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import text

from consumers.lead_sync import stamp_airtable_changes
from consumers.message import Applied
from consumers.skipped_cells import SkippedCell, record_skipped
from consumers.upsert import held_versions, upsert
from schemas.airtable import TableDestroyed
from schemas.airtable_mapping import ResolvedTable, resolve
from schemas.leads import LEADS

if TYPE_CHECKING:
    from collections.abc import Collection, Sequence
    from datetime import datetime

    from sqlalchemy.ext.asyncio import AsyncConnection

    from consumers.message import Tally
    from providers.airtable import AirtableClient
    from schemas.airtable import RecordChange
    from schemas.airtable_mapping import Cells, TableMapping
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

    @property
    def projections(self) -> tuple[Ownership, ...]:
        """Every projection a mapping feeds, once each."""
        return tuple(dict.fromkeys(m.ownership for m in self._mappings))

    def forget(self, base_id: str) -> None:
        """Read the base's schema again next time (its tables changed)."""
        self._bases.pop(base_id, None)

    async def _base(self, base_id: str) -> dict[str, ResolvedTable]:
        if base_id not in self._bases:
            async with self._lock:
                if base_id not in self._bases:
                    schema = await asyncio.to_thread(self._client.schema, base_id)
                    resolved = [resolve(m, base_id, schema) for m in self._mappings]
                    self._bases[base_id] = {r.table_id: r for r in resolved if r is not None}
        return self._bases[base_id]


def change_row(resolved: ResolvedTable, change: RecordChange, cells: Cells) -> dict[str, Any]:
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
    row.update(cells.columns)
    if change.created_time is not None:  # a created record's, or a snapshot's
        row["airtable_created_at"] = change.created_time
    return row


def in_version_order(
    ownership: Ownership, rows: Sequence[dict[str, Any]]
) -> list[list[dict[str, Any]]]:
    """The rows as rounds of upserts, one row per key in each: the parts of one version merged
    into one row (ties are parts of one action), each key's versions in ascending rounds.

    Applying round after round is applying change after change in version order, as separate
    batches would, so a batch can never lift an older change's cells to a newer version. A
    sticky column keeps its first value within a version; across versions the upsert keeps it.
    """
    by_key: dict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
    for row in rows:
        merged = by_key[row[ownership.key]].setdefault(row[ownership.version], {})
        for column, value in row.items():
            sticky = column in ownership.source_columns and ownership.is_sticky(column)
            if not (sticky and merged.get(column) is not None):
                merged[column] = value
    rounds: list[list[dict[str, Any]]] = []
    for versions in by_key.values():
        for i, version in enumerate(sorted(versions)):
            if i == len(rounds):
                rounds.append([])
            rounds[i].append(versions[version])
    return rounds


def is_echo(change: RecordChange, own_user_ids: Collection[str]) -> bool:
    """Did we make this change ourselves, through the API (the write-back)?"""
    return change.change_source == "publicApi" and change.change_user_id in own_user_ids


# Columns every change row carries; a row with nothing else says nothing about the record.
_FRAME = frozenset({"base_id", "table_id"})


async def apply_record_changes(
    conn: AsyncConnection,
    resolver: MappingResolver,
    changes: Sequence[RecordChange | TableDestroyed],
    own_user_ids: Collection[str] = (),
) -> Applied:
    """Write `changes` into their projections in the caller's transaction; returns what to
    count once it commits (cells skipped, by kind) and the changes that were stale, by their
    position in `changes`."""
    writes = _Writes(frozenset(own_user_ids))
    for n, change in enumerate(changes):
        if isinstance(change, TableDestroyed):
            writes.destroyed_tables.append(change)
            resolver.forget(change.base_id)
            continue
        resolved = await resolver.table(change.base_id, change.table_id)
        if resolved is not None:  # else a table no projection maps: stored, not projected
            writes.add(n, resolved, change)
    await stamp_airtable_changes(conn, writes.app_edits)
    await record_skipped(conn, writes.skipped)
    stale: dict[int, dict[str, Any]] = {}
    for ownership, rows in writes.rows.items():
        for round_ in in_version_order(ownership, rows):  # one round unless a key has versions
            changed = await _upsert_by_columns(conn, ownership, round_)
            stale |= await writes.stale(conn, ownership, round_, changed)
    # After the changes: a change in this batch can only make a snapshot lose, never the reverse.
    for ownership, by_record in writes.snapshots.items():
        snapshots = list(by_record.values())
        changed = await _upsert_by_columns(conn, ownership, snapshots, snapshot=True)
        stale |= await writes.stale(conn, ownership, snapshots, changed)
    for table in writes.destroyed_tables:
        await _mark_table_deleted(conn, resolver.projections, table)
    tally: Tally = Counter(
        ("sluice_consumer_cells_skipped", (cell.kind,)) for cell in writes.skipped
    )
    return Applied(tally, stale)


@dataclass
class _Writes:
    """What a batch of changes writes, gathered before anything is written."""

    own_user_ids: frozenset[str]
    rows: dict[Ownership, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    # Per projection, the latest snapshot of each record in the batch.
    snapshots: dict[Ownership, dict[str, dict[str, Any]]] = field(
        default_factory=lambda: defaultdict(dict)
    )
    app_edits: list[tuple[str, str, datetime, Any]] = field(default_factory=list)
    skipped: list[SkippedCell] = field(default_factory=list)
    destroyed_tables: list[TableDestroyed] = field(default_factory=list)
    # Per projection, the positions of the changes each (key, version) row was made of.
    positions: dict[Ownership, dict[tuple[str, Any], list[int]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(list))
    )

    def add(self, position: int, resolved: ResolvedTable, change: RecordChange) -> None:
        ownership = resolved.mapping.ownership
        cells = resolved.columns(change.cells)
        app_cells = resolved.app_columns(change.cells)
        self.skipped += (
            SkippedCell(
                ownership.name,
                change.record_id,
                change.provider_event_id,
                cell.field_id,
                cell.column,
                cell.value,
                cell.kind,
                cell.reason,
            )
            for cell in (*cells.refused, *app_cells.refused)
        )
        row = change_row(resolved, change, cells)
        self.positions[ownership][row[ownership.key], row[ownership.version]].append(position)
        if change.sweep is not None:
            self.snapshots[ownership][change.record_id] = row  # not an edit: nothing to stamp
            return
        if is_echo(change, self.own_user_ids):
            if change.action == "changed" and not set(row) - _FRAME - {
                ownership.key,
                ownership.version,
            }:
                return  # only the app-owned cells we wrote: nothing to apply
        elif change.action != "destroyed" and ownership is LEADS:
            self.app_edits.extend(
                (change.record_id, column, change.timestamp, value)
                for column, value in app_cells.columns.items()
            )
        self.rows[ownership].append(row)

    async def stale(
        self,
        conn: AsyncConnection,
        ownership: Ownership,
        written: Sequence[dict[str, Any]],
        changed: set[str],
    ) -> dict[int, dict[str, Any]]:
        """Of rows just upserted, the changes that wrote nothing because the row held a newer
        version, by position, with both versions. A row that wrote nothing at its own version
        (a part of that action already there) is not stale. Read right after their round, so
        the row's version is still the one that kept them out."""
        unchanged = {row[ownership.key] for row in written} - changed
        if not unchanged:
            return {}
        held = await held_versions(conn, ownership, unchanged)
        stale: dict[int, dict[str, Any]] = {}
        for row in written:
            key, version = row[ownership.key], row[ownership.version]
            if key in unchanged and held.get(key) is not None and held[key] > version:
                why = {"key": key, "row_version": held[key], "event_version": version}
                stale |= dict.fromkeys(self.positions[ownership][key, version], why)
        return stale


async def _mark_table_deleted(
    conn: AsyncConnection, projections: Sequence[Ownership], table: TableDestroyed
) -> None:
    """Every row of the deleted table, in every projection, is destroyed as a record would be:
    its deletion time set (sticky) at the action's version."""
    for ownership in projections:
        keys = (
            await conn.execute(
                text(
                    f"SELECT {ownership.key} FROM {ownership.name} "  # noqa: S608 - declared names
                    "WHERE base_id = :base AND table_id = :table AND deleted_at IS NULL"
                ),
                {"base": table.base_id, "table": table.table_id},
            )
        ).scalars()
        rows = [
            {
                ownership.key: key,
                "base_id": table.base_id,
                "table_id": table.table_id,
                ownership.version: table.base_transaction_number,
                "deleted_at": table.timestamp,
            }
            for key in keys
        ]
        marked = await upsert(conn, ownership, rows)
        log.warning(
            "airtable.table_rows_deleted",
            base_id=table.base_id,
            table_id=table.table_id,
            projection=ownership.name,
            rows=len(marked),
        )


async def _upsert_by_columns(
    conn: AsyncConnection,
    ownership: Ownership,
    rows: Sequence[dict[str, Any]],
    *,
    snapshot: bool = False,
) -> set[str]:
    """Returns the keys that changed."""
    # One upsert per set of columns: a statement writes the same columns for every row.
    by_columns: dict[frozenset[str], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_columns[frozenset(row)].append(row)
    changed: set[str] = set()
    for same_columns in by_columns.values():
        changed |= await upsert(conn, ownership, same_columns, snapshot=snapshot)
    return changed
