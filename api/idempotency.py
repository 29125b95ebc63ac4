"""Idempotent state changes: a repeat of a call with the same `X-Idempotency-Key` gets the first
call's response and has no second effect.

The key row is inserted in the same transaction as the change. A concurrent repeat's insert waits
on that row's unique-index entry until the first transaction ends: after a commit it finds the
stored response and replays it; after a rollback (the change failed with a 5xx) it goes ahead
itself. So 50 identical requests at once make one change. The response is stored with the key
only at commit, so a key is never seen without its response. The same key with a different
request (method, path or body) is refused with 422. Keys expire after
SLUICE_IDEMPOTENCY_TTL_SECONDS; an expired key is taken over by the next call that uses it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import text

from api.responses import ApiError
from sluice.db import transaction
from sluice.jsontext import json_text

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

MAX_KEY_LENGTH = 255

_CLAIM = text(
    """
    INSERT INTO idempotency_keys AS k (key, request_hash, status_code, response, expires_at)
    VALUES (:key, :hash, 0, 'null', now() + make_interval(secs => :ttl))
    ON CONFLICT (key) DO UPDATE
    SET request_hash = EXCLUDED.request_hash, status_code = 0, response = 'null',
        created_at = now(), expires_at = EXCLUDED.expires_at
    WHERE k.expires_at <= now()
    RETURNING 1
    """
)
_STORED = text("SELECT request_hash, status_code, response FROM idempotency_keys WHERE key = :key")
_SAVE = text(
    "UPDATE idempotency_keys SET status_code = :status, response = CAST(:response AS jsonb) "
    "WHERE key = :key RETURNING response"
)
_PRUNE = text("DELETE FROM idempotency_keys WHERE expires_at <= now()")


@dataclass(frozen=True, slots=True)
class Outcome:
    status: int
    body: Any
    replayed: bool = False


def request_hash(method: str, path: str, body: Any) -> str:  # noqa: ANN401 - parsed JSON
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"{method}\n{path}\n{canonical}".encode()).hexdigest()


async def run_once(
    engine: AsyncEngine,
    key: str,
    fingerprint: str,
    ttl_seconds: int,
    change: Callable[[AsyncConnection], Awaitable[tuple[int, Any]]],
) -> Outcome:
    async with transaction(engine) as conn:
        claimed = (
            await conn.execute(_CLAIM, {"key": key, "hash": fingerprint, "ttl": ttl_seconds})
        ).first()
        if claimed is None:
            stored = (await conn.execute(_STORED, {"key": key})).one()
            if stored.request_hash != fingerprint:
                raise ApiError(
                    422,
                    "idempotency_key_reused",
                    "this X-Idempotency-Key was used for a different request",
                )
            return Outcome(stored.status_code, stored.response, replayed=True)
        try:
            # A savepoint: a refused change leaves no trace but its stored answer.
            async with conn.begin_nested():
                status, body = await change(conn)
        except ApiError as exc:
            status, body = exc.status, exc.body
        # The first answer is sent as stored, so that every replay is byte for byte the same.
        saved = await conn.execute(
            _SAVE, {"key": key, "status": status, "response": json_text(body)}
        )
        stored_body = saved.scalar_one()
    return Outcome(status, stored_body)


async def prune_expired(conn: AsyncConnection) -> int:
    result = await conn.execute(_PRUNE)
    return result.rowcount
