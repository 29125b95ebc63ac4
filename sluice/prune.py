"""Deleting old rows a batch at a time, so no delete holds many locks or a long transaction.

Every table that only grows with history has a retention, and its owner prunes it this way
(the event store drops whole partitions instead: ingest/partitions.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sluice.db import autocommit, driver_connection

if TYPE_CHECKING:
    from collections.abc import Mapping

    from sqlalchemy.ext.asyncio import AsyncEngine

BATCH = 10_000


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
