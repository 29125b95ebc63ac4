"""The one SQL builder for projection tables, generated from their ownership declarations.

Every statement a consumer runs against a projection table comes from here, built from the
table's `Ownership` (schemas/ownership.py, where the rules are explained: versions, sticky
columns, ties, snapshots, redirects and cached columns). Asking to write a column the source
does not own raises `OwnershipError`.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

from sqlalchemy import JSON, text
from sqlalchemy.dialects import postgresql

from schemas.ownership import OwnershipError
from sluice.jsontext import json_text

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable, Mapping, Sequence

    from sqlalchemy.ext.asyncio import AsyncConnection
    from sqlalchemy.sql.elements import TextClause

    from schemas.ownership import CachedColumns, Ownership, Redirect

_DIALECT = postgresql.dialect()  # type: ignore[no-untyped-call]


def _sql_type(ownership: Ownership, column: str) -> str:
    column_type = ownership.table.columns[column].type
    return str(column_type.compile(dialect=_DIALECT))


def _is_json(ownership: Ownership, column: str) -> bool:
    return isinstance(ownership.table.columns[column].type, JSON)


def _walk(i: int, column: str, redirect: Redirect) -> list[str]:
    """CTEs `h{i}` (every link followed from each value of `column` in `v`) and `r{i}` (each
    value's last link). Per batch, not per row: each step joins every id still on the move."""
    step = (
        f"SELECT h.origin, s.{redirect.to}, h.hop + 1 FROM h{i} AS h "  # noqa: S608 - declared
        f"JOIN {redirect.table} AS s ON s.{redirect.key} = h.id "
        f"WHERE s.{redirect.to} IS NOT NULL AND h.hop < {redirect.hops}"
    )
    walk = (
        f"h{i}(origin, id, hop) AS (SELECT DISTINCT {column}, {column}, 0 FROM v "  # noqa: S608
        f"WHERE {column} IS NOT NULL UNION ALL {step})"
    )
    last = f"r{i} AS (SELECT DISTINCT ON (origin) origin, id FROM h{i} ORDER BY origin, hop DESC)"  # noqa: S608
    return [walk, last]


@cache
def upsert_statement(
    ownership: Ownership, columns: frozenset[str], *, snapshot: bool = False
) -> TextClause:
    """INSERT ... ON CONFLICT for many rows at once, writing only `columns` (plus the key).

    `columns` may be any subset of the source columns, so a change that carries only some fields
    (an Airtable record update) writes only those. Non-sticky columns need the version column in
    the set: they change only when the incoming version is higher than the row's (or, with
    `merge_ties`, equal to it while a value differs). With `snapshot`, rows apply while the
    row's version is still theirs (equal or lower), sticky columns too. A column that follows a
    redirect is stored as the row its value leads to, and a cached group whose join column is
    written is copied, in the same statement, from the row the join column now points at.
    """
    ownership.check_writable(columns)
    plain = sorted(c for c in columns if not ownership.is_sticky(c))
    sticky = sorted(c for c in columns if ownership.is_sticky(c))
    if (plain or snapshot) and ownership.version not in columns:
        what = plain or "a snapshot"
        raise OwnershipError(f"{ownership.name}: writing {what} needs the version column")
    # A cached group rides along with its join column: the row's copy of the other table's
    # columns is taken in the same statement, from the row it points at once written.
    cached = [group for group in ownership.cached if group.join[0] in plain]
    written = [ownership.key, *plain, *sticky]
    # The rows travel as one JSON document, typed by json_to_recordset: one statement, any number
    # of rows, and far cheaper to encode than one PostgreSQL array per column.
    recordset = ", ".join(
        f"{n} {'jsonb' if _is_json(ownership, n) else _sql_type(ownership, n)}" for n in written
    )
    rows = f"json_to_recordset(CAST(:rows AS json)) AS v({recordset})"
    value = {n: f"v.{n}" for n in written}
    ctes: list[str] = []
    joins = ""
    followed = [(n, r) for n in written if n != ownership.key and (r := ownership.follows(n))]
    for i, (name, redirect) in enumerate(followed):
        ctes += _walk(i, name, redirect)
        joins += f" LEFT JOIN r{i} ON r{i}.origin = v.{name}"
        value[name] = f"COALESCE(r{i}.id, v.{name})"
    if ctes:
        ctes.insert(0, f"v AS MATERIALIZED (SELECT * FROM {rows})")  # noqa: S608 - declared
        rows = "v"
    selected = [(n, value[n]) for n in written]
    for i, group in enumerate(cached):
        here, there = group.join
        selected += [(mine, f"c{i}.{theirs}") for mine, theirs in group.columns]
        joins += (
            f" LEFT JOIN {group.table} AS c{i} "
            f"ON c{i}.{there} = {value[here]} AND c{i}.{group.ready} IS NOT NULL"
        )
    follow_version = [*plain, *(mine for group in cached for mine, _ in group.columns)]
    version = ownership.version
    newer = f"(t.{version} IS NULL OR EXCLUDED.{version} {'>=' if snapshot else '>'} t.{version}"
    merged = [c for c in follow_version if c != version]
    if ownership.merge_ties and not snapshot and merged:
        # A tie writes only when it changes something: a repeat leaves the row (and the change
        # log its triggers feed) alone.
        mine = ", ".join(f"t.{c}" for c in merged)
        theirs = ", ".join(f"EXCLUDED.{c}" for c in merged)
        newer += (
            f" OR (EXCLUDED.{version} = t.{version} AND ROW({mine}) IS DISTINCT FROM ROW({theirs}))"
        )
    newer += ")"
    # With sticky columns the row may be updated for their sake alone, so each plain column then
    # carries its own version guard; without them the WHERE clause guards the whole update.
    sets = [
        f"{c} = CASE WHEN {newer} THEN EXCLUDED.{c} ELSE t.{c} END"
        if sticky
        else f"{c} = EXCLUDED.{c}"
        for c in follow_version
    ]
    sets += [f"{c} = COALESCE(t.{c}, EXCLUDED.{c})" for c in sticky]
    conditions = [newer] if plain or snapshot else []
    if not snapshot:
        conditions += [f"(t.{c} IS NULL AND EXCLUDED.{c} IS NOT NULL)" for c in sticky]
    table = ownership.name
    on_conflict = (
        f"DO UPDATE SET {', '.join(sets)} WHERE {' OR '.join(conditions)}" if sets else "DO NOTHING"
    )
    with_ctes = f"WITH RECURSIVE {', '.join(ctes)} " if ctes else ""
    return text(
        f"{with_ctes}INSERT INTO {table} AS t ({', '.join(n for n, _ in selected)}) "  # noqa: S608
        f"SELECT {', '.join(e for _, e in selected)} FROM {rows}{joins} "
        f"ON CONFLICT ({ownership.key}) {on_conflict} "
        f"RETURNING t.{ownership.key}"
    )


async def upsert(
    conn: AsyncConnection,
    ownership: Ownership,
    rows: Sequence[Mapping[str, Any]],
    *,
    snapshot: bool = False,
) -> set[str]:
    """Write `rows` (one per key, all with the same columns); returns the keys that changed.

    `snapshot`: the rows are the source's state as read at the version they carry, not changes
    (see the module docstring).
    """
    if not rows:
        return set()
    columns = frozenset(rows[0]) - {ownership.key}
    for row in rows:
        if frozenset(row) - {ownership.key} != columns:
            raise ValueError("every row of one upsert must carry the same columns")
    params = {"rows": json_text([dict(row) for row in rows])}
    result = await conn.execute(upsert_statement(ownership, columns, snapshot=snapshot), params)
    return {row[0] for row in result}


@cache
def _refresh_statement(ownership: Ownership, cached: CachedColumns, by: str) -> TextClause:
    # A row whose reference has no ready source row gets NULLs: the cache always mirrors the
    # row it points at now, never the one it pointed at before.
    here, there = cached.join
    key = ownership.key
    targets = ", ".join(f"{mine} = s.{theirs}" for mine, theirs in cached.columns)
    mine = ", ".join(f"t.{m}" for m, _ in cached.columns)
    theirs = ", ".join(f"s.{s}" for _, s in cached.columns)
    return text(
        f"UPDATE {ownership.name} AS t SET {targets} "  # noqa: S608 - identifiers are declared
        f"FROM {ownership.name} AS r LEFT JOIN {cached.table} AS s "
        f"ON s.{there} = r.{here} AND s.{cached.ready} IS NOT NULL "
        f"WHERE r.{key} = t.{key} AND t.{by} = ANY(CAST(:ids AS text[])) "
        f"AND ({mine}) IS DISTINCT FROM ({theirs})"
    )


async def refresh_cached(
    conn: AsyncConnection, ownership: Ownership, by: str, ids: Collection[str]
) -> int:
    """Copy every cached column group onto the rows whose `by` column is in `ids`: for when the
    other table changed (an upsert already copies the cache of the rows it writes)."""
    if not ids:
        return 0
    if by not in (ownership.key, *ownership.source_columns):
        raise OwnershipError(f"{ownership.name}.{by} cannot select rows to refresh")
    changed = 0
    for cached in ownership.cached:
        result = await conn.execute(_refresh_statement(ownership, cached, by), {"ids": list(ids)})
        changed += result.rowcount
    return changed


@cache
def _repoint_statement(ownership: Ownership, column: str) -> TextClause:
    return text(
        f"UPDATE {ownership.name} SET {column} = :to "  # noqa: S608 - identifiers are declared
        f"WHERE {column} = ANY(CAST(:from_ AS text[])) RETURNING {ownership.key}"
    )


async def repoint(
    conn: AsyncConnection, ownership: Ownership, column: str, from_: Collection[str], to: str
) -> set[str]:
    """Move rows whose source-owned reference `column` is in `from_` to `to` (a merge)."""
    ownership.check_writable([column])
    if not from_:
        return set()
    result = await conn.execute(
        _repoint_statement(ownership, column), {"from_": list(from_), "to": to}
    )
    return {row[0] for row in result}


def newest_per_key(
    ownership: Ownership, rows: Iterable[Mapping[str, Any]]
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """One row per key, as a single upsert needs: the highest version's values, and each sticky
    column's value from the first row that set it (as the table keeps the first value too); and
    per key, the position of the row whose version won (the first of equals).
    """
    chosen: dict[str, dict[str, Any]] = {}
    winner: dict[str, int] = {}
    for i, row in enumerate(rows):
        key = row[ownership.key]
        current = chosen.get(key)
        if current is None:
            chosen[key] = dict(row)
            winner[key] = i
            continue
        newer = row[ownership.version] > current[ownership.version]
        if newer:
            winner[key] = i
        merged = dict(row) if newer else current
        for column in ownership.source_columns:
            if ownership.is_sticky(column) and column in merged:
                first = current.get(column)
                merged[column] = first if first is not None else row.get(column)
        chosen[key] = merged
    return list(chosen.values()), winner


def superseded_rows(
    ownership: Ownership, rows: Sequence[Mapping[str, Any]]
) -> dict[int, dict[str, Any]]:
    """The rows a newer row of their key in `rows` supersedes, by position, each with its key,
    the version that won and its own: what upsert_newest reports for them once the winner is
    written. No I/O, so it can be known before the batch is applied."""
    key, version = ownership.key, ownership.version
    winner: dict[str, int] = {}
    for i, row in enumerate(rows):
        won = winner.get(row[key])
        if won is None or row[version] > rows[won][version]:
            winner[row[key]] = i
    return {
        i: {
            "key": row[key],
            "row_version": rows[winner[row[key]]][version],
            "event_version": row[version],
        }
        for i, row in enumerate(rows)
        if winner[row[key]] != i
    }


async def upsert_newest(
    conn: AsyncConnection, ownership: Ownership, rows: Sequence[Mapping[str, Any]]
) -> dict[int, dict[str, Any]]:
    """Write the newest row of each key (newest_per_key, then upsert) and say which rows changed
    nothing, by their position in `rows`: a newer row of their key came in the same batch
    (as `superseded_rows` says, when that row was written), or the table held their version or a
    newer one already. Each says the row's version and its own.
    """
    if not rows:
        return {}
    newest, winner = newest_per_key(ownership, rows)
    changed = await upsert(conn, ownership, newest)
    key, version = ownership.key, ownership.version
    stale = [i for i, row in enumerate(rows) if winner[row[key]] != i or row[key] not in changed]
    if not stale:
        return {}
    # A key written now holds its winner's version; only the others need reading.
    versions = {k: rows[i][version] for k, i in winner.items() if k in changed}
    unread = sorted({rows[i][key] for i in stale} - versions.keys())
    if unread:
        versions.update(await held_versions(conn, ownership, unread))
    return {
        i: {
            "key": rows[i][key],
            "row_version": versions.get(rows[i][key]),
            "event_version": rows[i][version],
        }
        for i in stale
    }


async def held_versions(
    conn: AsyncConnection, ownership: Ownership, keys: Collection[str]
) -> dict[str, Any]:
    """The version each of `keys` holds in the table (keys without a row are left out)."""
    held = await conn.execute(
        text(
            f"SELECT {ownership.key}, {ownership.version} FROM {ownership.name} "  # noqa: S608 - declared names
            f"WHERE {ownership.key} = ANY(CAST(:keys AS text[]))"
        ),
        {"keys": list(keys)},
    )
    return {row[0]: row[1] for row in held}
