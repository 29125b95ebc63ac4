"""Bucket leases: which relay may publish which keys, and for how long.

Every outbox row belongs to one of `BUCKETS` buckets, computed from its key by PostgreSQL (see
migration 0002), so all rows of a key share a bucket. A relay publishes only the buckets it holds
a lease on, one batch at a time in id order. A lease row carries the owner, a fresh token per
acquisition, and `lease_until`; relays renew their leases while healthy and delete published rows
only while the token is still theirs and unexpired.

Relays split the buckets fairly: each announces itself in `outbox_relays`, counts the live
relays, and takes free buckets (never held, released, or expired) up to its share, or releases
its surplus once nothing of those buckets is in flight. A bucket therefore changes owner only
after its old owner released it or stopped renewing for a whole lease.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog
from sqlalchemy import text

from sluice.db import transaction

if TYPE_CHECKING:
    import uuid

    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

log = structlog.get_logger(__name__)

# Must equal the number of rows migration 0002 put in outbox_leases; it never changes.
BUCKETS = 64

_HEARTBEAT = text(
    """
    INSERT INTO outbox_relays (owner, alive_until)
    VALUES (:owner, now() + make_interval(secs => :lease))
    ON CONFLICT (owner) DO UPDATE SET alive_until = EXCLUDED.alive_until
    """
)
_FORGET_DEAD = text("DELETE FROM outbox_relays WHERE alive_until < now()")
_LIVE = text("SELECT count(*) FROM outbox_relays WHERE alive_until >= now()")
_RENEW = text(
    """
    UPDATE outbox_leases SET lease_until = now() + make_interval(secs => :lease)
    WHERE owner = :owner AND token = ANY(CAST(:tokens AS uuid[])) AND lease_until > now()
    RETURNING bucket, token
    """
)
_ACQUIRE = text(
    """
    UPDATE outbox_leases AS l
    SET owner = :owner, token = gen_random_uuid(),
        lease_until = now() + make_interval(secs => :lease)
    FROM (
        SELECT bucket FROM outbox_leases
        WHERE lease_until IS NULL OR lease_until <= now()
        ORDER BY bucket
        LIMIT :wanted
        FOR UPDATE SKIP LOCKED
    ) AS free
    WHERE l.bucket = free.bucket
    RETURNING l.bucket, l.token
    """
)
_RELEASE = text(
    """
    UPDATE outbox_leases SET owner = NULL, token = NULL, lease_until = NULL
    WHERE owner = :owner AND token = ANY(CAST(:tokens AS uuid[]))
    """
)
_LEAVE = text("DELETE FROM outbox_relays WHERE owner = :owner")


@dataclass(frozen=True, slots=True)
class LeaseChange:
    acquired: list[int]
    lost: list[int]
    released: list[int]
    held: int
    live_relays: int
    fair_share: int

    @property
    def wants_more(self) -> bool:
        return self.held < self.fair_share


class BucketLeases:
    """The buckets this relay holds, and the SQL that renews, takes and gives them back."""

    def __init__(self, engine: AsyncEngine, owner: str, lease_seconds: float) -> None:
        self._engine = engine
        self.owner = owner
        self._lease_seconds = lease_seconds
        self.held: dict[int, uuid.UUID] = {}
        # Local, conservative end of our leases: measured from before the statement that set
        # lease_until, so it never runs past the database's idea of it.
        self._deadline = 0.0

    @property
    def tokens(self) -> list[uuid.UUID]:
        return list(self.held.values())

    def remaining(self) -> float:
        return self._deadline - time.monotonic()

    async def maintain(self) -> LeaseChange:
        """Heartbeat, renew what we hold, then take or give buckets to reach our fair share.

        Call only when nothing is in flight: surplus buckets are released at once.
        """
        started = time.monotonic()
        params = {"owner": self.owner, "lease": self._lease_seconds}
        async with transaction(self._engine) as conn:
            await conn.execute(_HEARTBEAT, params)
            await conn.execute(_FORGET_DEAD)
            live = int((await conn.execute(_LIVE)).scalar_one())
            renewed = await conn.execute(_RENEW, {**params, "tokens": self.tokens})
            kept = {row.bucket: row.token for row in renewed}
            lost = sorted(set(self.held) - set(kept))
            fair = math.ceil(BUCKETS / max(live, 1))
            acquired: list[int] = []
            released: list[int] = []
            if len(kept) < fair:
                taken = await conn.execute(_ACQUIRE, {**params, "wanted": fair - len(kept)})
                for row in taken:
                    kept[row.bucket] = row.token
                    acquired.append(row.bucket)
            elif len(kept) > fair:
                released = sorted(kept)[fair:]
                await self._release(conn, [kept.pop(bucket) for bucket in released])
        self.held = dict(sorted(kept.items()))
        self._deadline = started + self._lease_seconds
        if lost:
            log.warning("relay.buckets_lost", owner=self.owner, buckets=lost)
        return LeaseChange(acquired, lost, released, len(self.held), live, fair)

    async def release_all(self) -> None:
        """Give every bucket back and leave, so other relays take over without waiting."""
        async with transaction(self._engine) as conn:
            await self._release(conn, self.tokens)
            await conn.execute(_LEAVE, {"owner": self.owner})
        self.held = {}
        self._deadline = 0.0

    async def _release(self, conn: AsyncConnection, tokens: list[uuid.UUID]) -> None:
        if tokens:
            await conn.execute(_RELEASE, {"owner": self.owner, "tokens": tokens})
