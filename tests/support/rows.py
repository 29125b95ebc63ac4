"""Reading rows back in tests: one value, or one row as a dict of its columns."""

from __future__ import annotations

from typing import Any

import psycopg

Conn = psycopg.Connection[tuple[Any, ...]]


def scalar(db: Conn, sql: str, *params: Any) -> Any:
    row = db.execute(sql, params).fetchone()
    assert row is not None
    return row[0]


def one_row(db: Conn, sql: str, *params: Any) -> dict[str, Any] | None:
    cursor = db.execute(sql, params)
    row = cursor.fetchone()
    if row is None:
        return None
    assert cursor.description is not None
    return {d.name: v for d, v in zip(cursor.description, row, strict=True)}
