"""Helpers for the App API and write-back tests: rows to work on, and an authorised client."""

from __future__ import annotations

import contextlib
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx
import psycopg

from api.app import create_api_app
from sluice.settings import Settings
from tests.support.services import running_server

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

Conn = psycopg.Connection[tuple[Any, ...]]

API_TOKEN = "test-api-token-0123456789"  # noqa: S105 - a test value
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


@contextlib.asynccontextmanager
async def api_client(database_url: str, **more: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The App API on a real server (with `more` settings), and a client that sends the bearer
    token."""
    settings = Settings(DATABASE_URL=database_url, SLUICE_API_TOKEN=API_TOKEN, **more)
    async with (
        running_server(create_api_app(settings)) as url,
        httpx.AsyncClient(base_url=url, headers=AUTH, timeout=20) as client,
    ):
        yield client


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


# What a refused request must leave as it was: the rows it could have written or changed.
_WRITTEN = {
    "jobs": "SELECT * FROM jobs ORDER BY booking_id",
    "leads": "SELECT * FROM leads ORDER BY record_id",
    "outbox": "SELECT id FROM outbox ORDER BY id",
    "idempotency_keys": "SELECT key FROM idempotency_keys ORDER BY key",
    "projection_changes": "SELECT id FROM projection_changes ORDER BY id",
    "lead_sync": "SELECT * FROM lead_sync ORDER BY record_id",
}


def written(db: Conn) -> dict[str, list[tuple[Any, ...]]]:
    return {table: db.execute(sql).fetchall() for table, sql in _WRITTEN.items()}
