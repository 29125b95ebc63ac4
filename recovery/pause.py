"""`sluice pause` / `sluice resume`: hold a consumer group or the relay, durably.

A pause is a row in `pauses`, announced on the `sluice_pause` channel; every replica of the
component reads it when notified (sluice/pause.py), so at once the consumer fetches nothing
(its lag grows) or the relay publishes nothing (the outbox backlog grows); ingest keeps
accepting and storing webhooks. Both are done once (pausing a paused component, or resuming a
running one, changes nothing) and each change is written to the audit log in its own
transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import text

from consumers.registry import CONSUMERS
from sluice.audit import write_audit
from sluice.db import row_json, transaction
from sluice.pause import RELAY, consumer_component

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

COMPONENTS = (RELAY, *(consumer_component(name) for name in CONSUMERS))

_PAUSE = text(
    "INSERT INTO pauses (component, paused_by, reason) VALUES (:component, :actor, :reason) "
    "ON CONFLICT (component) DO NOTHING RETURNING paused_at"
)
_RESUME = text("DELETE FROM pauses WHERE component = :component RETURNING paused_at")
_NOTIFY = text("SELECT pg_notify('sluice_pause', :component)")
_LIST = text("SELECT component, paused_at, paused_by, reason FROM pauses ORDER BY component")


class UnknownComponentError(ValueError):
    def __init__(self, component: str) -> None:
        super().__init__(f"no component {component!r}; choose one of {', '.join(COMPONENTS)}")


@dataclass(frozen=True, slots=True)
class PauseChange:
    component: str
    paused: bool  # the state after the call
    changed: bool  # False when it was so already

    def as_json(self) -> dict[str, Any]:
        return {"component": self.component, "paused": self.paused, "changed": self.changed}


def _check(component: str) -> None:
    if component not in COMPONENTS:
        raise UnknownComponentError(component)


async def pause(
    engine: AsyncEngine, component: str, *, actor: str, reason: str | None = None
) -> PauseChange:
    _check(component)
    async with transaction(engine) as conn:
        params = {"component": component, "actor": actor, "reason": reason}
        changed = (await conn.execute(_PAUSE, params)).first() is not None
        if changed:
            await write_audit(conn, actor, "pause", component, {"reason": reason})
            await conn.execute(_NOTIFY, {"component": component})  # delivered at commit
    return PauseChange(component, paused=True, changed=changed)


async def resume(engine: AsyncEngine, component: str, *, actor: str) -> PauseChange:
    _check(component)
    async with transaction(engine) as conn:
        changed = (await conn.execute(_RESUME, {"component": component})).first() is not None
        if changed:
            await write_audit(conn, actor, "resume", component, {})
            await conn.execute(_NOTIFY, {"component": component})
    return PauseChange(component, paused=False, changed=changed)


async def paused_components(engine: AsyncEngine) -> list[dict[str, Any]]:
    async with transaction(engine) as conn:
        rows = (await conn.execute(_LIST)).all()
    return [row_json(row) for row in rows]
