"""The audit log's one write: an action, who took it and on what, in the caller's transaction
(so the log holds exactly what was done). Operators' actions (recovery/audit.py) and staff
resolutions through the App API both write it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import text

from sluice.jsontext import json_text

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

_WRITE = text(
    "INSERT INTO audit_log (actor, action, target, detail) "
    "VALUES (:actor, :action, :target, CAST(:detail AS jsonb))"
)


async def write_audit(
    conn: AsyncConnection, actor: str, action: str, target: str, detail: dict[str, Any]
) -> None:
    await conn.execute(
        _WRITE, {"actor": actor, "action": action, "target": target, "detail": json_text(detail)}
    )
