"""One run per source at a time: a PostgreSQL session advisory lock held for the whole run.

A session lock, not a transaction lock: a run spans many transactions. It lives on a connection
of its own, so a run that dies (or loses that connection) frees it at once.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from sqlalchemy import text

from sluice.db import autocommit

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from sqlalchemy.ext.asyncio import AsyncEngine

# First half of the two-int advisory lock key (outbox keys use 0x51CE, Airtable fetches 0x51CF).
RUN_LOCK_NAMESPACE = 0x51D0

_TRY_LOCK = text("SELECT pg_try_advisory_lock(:namespace, hashtext(:name))")
_UNLOCK = text("SELECT pg_advisory_unlock(:namespace, hashtext(:name))")


class RunLockedError(Exception):
    """Another run of the same job holds the lock: this one does nothing."""


@asynccontextmanager
async def run_lock(engine: AsyncEngine, name: str) -> AsyncIterator[None]:
    params = {"namespace": RUN_LOCK_NAMESPACE, "name": name}
    # Autocommit, so the lock's connection does not sit idle in a transaction all run long.
    async with autocommit(engine) as conn:
        if not (await conn.execute(_TRY_LOCK, params)).scalar_one():
            raise RunLockedError(f"another {name} run is in progress; not starting a second one")
        try:
            yield
        finally:
            await conn.execute(_UNLOCK, params)
