"""Whether an operator has paused a component: a row in `pauses` (written by `sluice pause`,
recovery/pause.py, which also notifies the `sluice_pause` channel). Every replica listens on that
channel and reads the flag when notified, and every half minute besides (for a notification lost
while reconnecting), so a pause is seen everywhere at once and outlives restarts, and an idle
component issues no queries for it. A paused consumer fetches nothing and a paused relay
publishes nothing; ingest never pauses: webhooks are still accepted and stored."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

import structlog
from sqlalchemy import text

from sluice.db import DatabaseUnavailableError, transaction
from sluice.listen import CommitListener

if TYPE_CHECKING:
    from prometheus_client import Gauge
    from sqlalchemy.ext.asyncio import AsyncEngine

log = structlog.get_logger(__name__)

RELAY = "relay"
CHANNEL = "sluice_pause"
_READ = text("SELECT 1 FROM pauses WHERE component = :component")


def consumer_component(name: str) -> str:
    """A consumer's component name: `consumer:<name>` (`sluice pause consumer:jobs`)."""
    return f"consumer:{name}"


class PauseWatch:
    """Keeps `paused` current for one component; `changed` is set at each change."""

    def __init__(
        self,
        engine: AsyncEngine,
        component: str,
        *,
        every_seconds: float = 30.0,
        gauge: Gauge | None = None,
    ) -> None:
        self.component = component
        self.paused = False
        self.changed = asyncio.Event()
        self._engine = engine
        self._every = every_seconds
        self._listener = CommitListener(
            engine.url.render_as_string(hide_password=False),
            channel=CHANNEL,
            application_name="sluice-pause-listen",
        )
        self._gauge = gauge
        if gauge is not None:
            gauge.labels(component).set(0)

    async def check(self) -> bool:
        """Read the flag now; keeps the last known state while the database is out of reach."""
        try:
            async with transaction(self._engine) as conn:
                row = (await conn.execute(_READ, {"component": self.component})).first()
        except DatabaseUnavailableError as exc:
            log.warning("pause.check_failed", component=self.component, error=str(exc))
            return self.paused
        paused = row is not None
        if paused != self.paused:
            self.paused = paused
            self.changed.set()
            log.info("pause.paused" if paused else "pause.resumed", component=self.component)
            if self._gauge is not None:
                self._gauge.labels(self.component).set(int(paused))
        return paused

    async def run(self, stopping: asyncio.Event) -> None:
        """Check when notified (and every interval) until `stopping` is set."""
        listening = asyncio.create_task(self._listener.run(), name="pause-listen")
        try:
            while not stopping.is_set():
                woken = asyncio.create_task(self._listener.wake.wait())
                stop = asyncio.create_task(stopping.wait())
                try:
                    await asyncio.wait(
                        {woken, stop}, timeout=self._every, return_when=asyncio.FIRST_COMPLETED
                    )
                finally:
                    woken.cancel()
                    stop.cancel()
                self._listener.wake.clear()
                if not stopping.is_set():
                    await self.check()
        finally:
            listening.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listening
