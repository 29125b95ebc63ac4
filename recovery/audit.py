"""The audit log, read, and claimed by the console's forms: every operator action (redrive,
discard, ...), who took it and when, written in the transaction of the action itself
(sluice/audit.py), so the log holds exactly what was done."""

from __future__ import annotations

import getpass
from typing import TYPE_CHECKING, Any

from sqlalchemy import text

from sluice.db import row_json, transaction
from sluice.jsontext import json_text

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

_CLAIM = text(
    "INSERT INTO audit_log (actor, action, target, detail, request_key) "
    "VALUES (:actor, :action, :target, CAST(:detail AS jsonb), :key) "
    "ON CONFLICT (request_key) WHERE request_key IS NOT NULL DO NOTHING RETURNING id"
)
_READ = text(
    "SELECT id, at, actor, action, target, detail FROM audit_log ORDER BY id DESC LIMIT :limit"
)


def command_line_actor() -> str:
    """Who runs a CLI command: the operating system's user name."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no user name for this uid (a bare container)
        return "cli"


async def claim_request(  # noqa: PLR0913 - an audit row and the key it is kept under
    engine: AsyncEngine,
    key: str,
    *,
    actor: str,
    action: str,
    target: str,
    detail: dict[str, Any],
) -> bool:
    """Record that a console request asked for an action, once per request key: False when
    this key was seen before (a repeated submit), and then nothing is to be done."""
    params = {
        "actor": actor,
        "action": action,
        "target": target,
        "detail": json_text(detail),
        "key": key,
    }
    async with transaction(engine) as conn:
        return (await conn.execute(_CLAIM, params)).first() is not None


async def read_audit(engine: AsyncEngine, *, limit: int = 100) -> list[dict[str, Any]]:
    """The latest actions, newest first."""
    async with transaction(engine) as conn:
        rows = (await conn.execute(_READ, {"limit": limit})).all()
    return [row_json(row) for row in rows]
