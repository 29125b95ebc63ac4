"""Deleting old rows a batch at a time, so no delete holds many locks or a long transaction.

Every table that only grows with history has a retention, and its owner prunes it this way
(the event store drops whole partitions instead: ingest/partitions.py).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import structlog

from sluice.db import DatabaseUnavailableError, autocommit, driver_connection

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping

    from sqlalchemy.ext.asyncio import AsyncEngine

log = structlog.get_logger(__name__)

BATCH = 10_000
HOURLY = 3600.0


def batched_delete(table: str, condition: str) -> str:
    """A statement deleting at most `%(batch)s` rows of `table` matching `condition` (psycopg
    placeholders; `table` and `condition` are our own constants)."""
    return f"""
    DELETE FROM {table} WHERE ctid = ANY(ARRAY(
        SELECT ctid FROM {table} WHERE {condition} LIMIT %(batch)s))
    """  # noqa: S608 - our own table names and conditions; values are parameters


async def delete_in_batches(
    engine: AsyncEngine, statement: str, params: Mapping[str, object], *, batch: int = BATCH
) -> int:
    """Run a `batched_delete` statement until it deletes less than a batch; each batch commits
    on its own. Returns how many rows went."""
    total = 0
    while True:
        async with autocommit(engine) as conn:
            cursor = await (await driver_connection(conn)).execute(
                statement, {**params, "batch": batch}
            )
        total += cursor.rowcount
        if cursor.rowcount < batch:
            return total


async def keep_pruning(
    prune: Callable[[], Awaitable[None]],
    failed: str,
    *,
    every_seconds: float = HOURLY,
    **context: str,
) -> None:
    """Run `prune` now and every `every_seconds`, until cancelled. A database outage is logged
    as `failed` (with `context`) and waits a turn; anything else is a bug and ends the loop."""
    while True:
        try:
            await prune()
        except DatabaseUnavailableError as exc:
            log.warning(failed, error=str(exc), **context)
        await asyncio.sleep(every_seconds)
