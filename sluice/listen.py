"""Waking the relay when rows commit: LISTEN on the channel the outbox trigger notifies.

A statement-level trigger on outbox calls pg_notify('sluice_outbox', ''); PostgreSQL delivers it
when the inserting transaction commits. An idle relay therefore sleeps on this connection and
issues no queries; the relay's slow fallback poll covers notifications lost while reconnecting.
"""

from __future__ import annotations

import asyncio

import psycopg
import structlog

from sluice.db import libpq_url
from sluice.resilience import Backoff

log = structlog.get_logger(__name__)

CHANNEL = "sluice_outbox"


class CommitListener:
    def __init__(
        self,
        database_url: str,
        channel: str = CHANNEL,
        application_name: str = "sluice-relay-listen",
    ) -> None:
        self._url = libpq_url(database_url)
        self._channel = channel
        self._application_name = application_name
        self.wake = asyncio.Event()

    async def run(self) -> None:
        backoff = Backoff(0.5, 30.0)
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self._url,
                    autocommit=True,
                    connect_timeout=3,
                    application_name=self._application_name,
                )
                async with conn:
                    await conn.execute(f"LISTEN {self._channel}")
                    backoff.reset()
                    # Anything committed while we were not listening: look once.
                    self.wake.set()
                    async for _ in conn.notifies():
                        self.wake.set()
            except (psycopg.Error, OSError) as exc:
                log.debug("relay.listen_lost", error=str(exc).splitlines()[0] if str(exc) else "")
            self.wake.set()
            await asyncio.sleep(backoff.next_delay())
