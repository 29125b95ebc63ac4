"""How far each recovery pass has looked at a provider, kept durably (`recovery_watermarks`).

A watermark says: everything the provider had up to this time is committed here. It moves only
in the transaction that commits the last of what it covers, so a run killed at any instant
starts again from a time whose events are all stored, and looks again at the rest.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import text

from sluice.db import row_json, transaction

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

EVENTS = "square:events"
CUSTOMERS = "square:customers"

_READ = text('SELECT watermark FROM recovery_watermarks WHERE "pass" = :name')
# Never backwards: an overlapping run that finishes late must not undo a later one's progress.
_ADVANCE = text(
    """
    INSERT INTO recovery_watermarks ("pass", watermark) VALUES (:name, :at)
    ON CONFLICT ("pass") DO UPDATE
    SET watermark = GREATEST(recovery_watermarks.watermark, EXCLUDED.watermark), updated_at = now()
    """
)
_ALL = text(
    'SELECT "pass", watermark, updated_at,'
    " round(EXTRACT(EPOCH FROM now() - watermark), 1)::float AS age_seconds"
    ' FROM recovery_watermarks ORDER BY "pass"'
)


async def read_watermark(engine: AsyncEngine, name: str) -> datetime | None:
    async with transaction(engine) as conn:
        found = (await conn.execute(_READ, {"name": name})).scalar_one_or_none()
    return found if isinstance(found, datetime) else None


async def advance_watermark(conn: AsyncConnection, name: str, at: datetime) -> None:
    """Move `name` to `at` (never back), in the caller's transaction."""
    await conn.execute(_ADVANCE, {"name": name, "at": at})


async def all_watermarks(engine: AsyncEngine) -> list[dict[str, Any]]:
    """Every pass's watermark and its age in seconds, for the console and the metrics."""
    async with transaction(engine) as conn:
        rows = (await conn.execute(_ALL)).all()
    return [row_json(row) for row in rows]
