"""Helpers for the App API and write-back tests: rows to work on, and an authorised client."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

Conn = psycopg.Connection[tuple[Any, ...]]

API_TOKEN = "test-api-token-0123456789"  # noqa: S105 - a test value
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


def key() -> str:
    return uuid.uuid4().hex


def insert_job(
    db: Conn, *, work_status: str = "scheduled", start_at: datetime | None = None
) -> str:
    booking_id = f"bk_{uuid.uuid4().hex[:12]}"
    db.execute(
        "INSERT INTO jobs (booking_id, status, start_at, booking_version, work_status) "
        "VALUES (%s, 'ACCEPTED', %s, 1, %s)",
        (booking_id, start_at or datetime.now(UTC) + timedelta(hours=2), work_status),
    )
    return booking_id


def insert_lead(
    db: Conn, record_id: str | None = None, base_id: str = "appTEST", table_id: str = "tblTEST"
) -> str:
    record_id = record_id or f"rec{uuid.uuid4().hex[:14]}"
    db.execute(
        "INSERT INTO leads (record_id, base_id, table_id, full_name, email, airtable_txn) "
        "VALUES (%s, %s, %s, 'Ada Lovelace', 'ada@example.com', 1)",
        (record_id, base_id, table_id),
    )
    return record_id


def scalar(db: Conn, sql: str, *params: Any) -> Any:
    row = db.execute(sql, params).fetchone()  # type: ignore[arg-type]
    assert row is not None
    return row[0]
