"""Reading a relay's outbox rows and deleting the published ones. Each call is one statement,
its own transaction: none stays open while records travel to Kafka. They run once or twice per
relay turn, so they go straight to psycopg (sluice.db.driver_connection), placeholders and all.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import text

from outbox.producer import OutboxRecord
from sluice.db import autocommit, driver_connection, transaction

if TYPE_CHECKING:
    import uuid
    from collections.abc import Collection, Iterable, Sequence

    from sqlalchemy.ext.asyncio import AsyncEngine

# The oldest rows of our buckets, in id order: the LIMIT keeps a prefix of every bucket, never a
# row without the older rows of its bucket, and a batch of neighbouring ids sits on few heap pages
# (rows of one bucket are spread over the whole table); rows of other relays' buckets are stepped
# over, which is cheap while they drain theirs. Rows still in flight are skipped by id,
# not by an id cursor: a row with a lower id may become visible later (its transaction committed
# later) and must still be read, because rows of its key with higher ids cannot exist yet.
_READ = """
    SELECT id, bucket, topic, key, payload::text AS payload, headers::text AS headers,
           extract(epoch FROM created_at)::float8 AS created_at
    FROM outbox
    WHERE bucket = ANY(CAST(%(buckets)s AS smallint[]))
      AND id NOT IN (SELECT unnest(CAST(%(skip)s AS bigint[])))
    ORDER BY id
    LIMIT %(limit)s
    """

# Deletes only while the lease that covered the send is still ours and unexpired: a relay that
# stalled past its lease must not delete rows the bucket's new owner is publishing.
_DELETE = """
    DELETE FROM outbox
    WHERE id = ANY(CAST(%(ids)s AS bigint[]))
      AND bucket IN (
        SELECT bucket FROM outbox_leases
        WHERE token = ANY(CAST(%(tokens)s AS uuid[])) AND lease_until > clock_timestamp())
    """

_STATS = text(
    """
    SELECT count(*) AS backlog,
           coalesce(extract(epoch FROM clock_timestamp() - min(created_at)), 0) AS oldest_age
    FROM outbox
    """
)


@dataclass(frozen=True, slots=True)
class Backlog:
    rows: int
    oldest_age_seconds: float


def _record(row: Sequence[Any]) -> OutboxRecord:
    id_, bucket, topic, key, payload, headers, created_at = row
    return OutboxRecord(
        id_,
        bucket,
        topic,
        key,
        payload.encode(),
        [(name, value.encode()) for name, value in json.loads(headers).items()],
        created_at,
    )


def _array(values: Iterable[object]) -> str:
    # An array literal: adapting thousands of Python values one by one costs more than the query.
    return "{" + ",".join(map(str, values)) + "}"


async def read_rows(
    engine: AsyncEngine, buckets: Sequence[int], *, limit: int, skip: Collection[int] = ()
) -> list[OutboxRecord]:
    if not buckets:
        return []
    params = {"buckets": _array(buckets), "skip": _array(skip), "limit": limit}
    async with autocommit(engine) as conn:
        cursor = await (await driver_connection(conn)).execute(_READ, params)
        return [_record(row) for row in await cursor.fetchall()]


async def delete_rows(engine: AsyncEngine, ids: Sequence[int], tokens: Sequence[uuid.UUID]) -> int:
    """Delete published rows; returns how many were still covered by our lease."""
    if not ids:
        return 0
    params = {"ids": _array(ids), "tokens": _array(tokens)}
    async with autocommit(engine) as conn:
        cursor = await (await driver_connection(conn)).execute(_DELETE, params)
        return cursor.rowcount


async def backlog(engine: AsyncEngine) -> Backlog:
    async with transaction(engine) as conn:
        row = (await conn.execute(_STATS)).one()
        return Backlog(rows=int(row.backlog), oldest_age_seconds=float(row.oldest_age))
