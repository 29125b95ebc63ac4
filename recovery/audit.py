"""The audit log: every operator action (redrive, discard, ...), who took it and when, written
in the transaction of the action itself, so the log holds exactly what was done."""

from __future__ import annotations

import getpass
from typing import TYPE_CHECKING, Any

from sqlalchemy import text

from recovery.journey import row_json
from sluice.db import transaction
from sluice.jsontext import json_text

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

_WRITE = text(
    "INSERT INTO audit_log (actor, action, target, detail) "
    "VALUES (:actor, :action, :target, CAST(:detail AS jsonb))"
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


async def write_audit(
    conn: AsyncConnection, actor: str, action: str, target: str, detail: dict[str, Any]
) -> None:
    await conn.execute(
        _WRITE, {"actor": actor, "action": action, "target": target, "detail": json_text(detail)}
    )


async def read_audit(engine: AsyncEngine, *, limit: int = 100) -> list[dict[str, Any]]:
    """The latest actions, newest first."""
    async with transaction(engine) as conn:
        rows = (await conn.execute(_READ, {"limit": limit})).all()
    return [row_json(row) for row in rows]
