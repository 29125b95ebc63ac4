"""What the write-back shows on the consumer's /metrics: its leads by sync state (read from
`lead_sync` after each round, so every replica reports the same, the whole table's), how long a
staff change waits until Airtable holds it, and every request sent to Airtable (its quota is
counted in requests). The breaker's state is `sluice_provider_breaker_state`
(sluice/resilience.py)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry

from consumers.lead_sync import leads_by_state
from sluice.db import transaction
from sluice.metrics import counter, gauge, histogram

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

# From a second to an hour: the pusher is woken at once, a breaker or a 429 holds it minutes.
PUSH_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)

SAMPLE_SECONDS = 15.0


class WritebackMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.leads = gauge("sluice_writeback_leads", self.registry)
        self.push_seconds = histogram(
            "sluice_writeback_push_seconds", self.registry, buckets=PUSH_BUCKETS
        )
        self.requests = counter("sluice_airtable_requests", self.registry)
        self._sent = 0
        self._sampled_at: float | None = None

    async def sample(self, engine: AsyncEngine, *, every_seconds: float = SAMPLE_SECONDS) -> None:
        """Count the leads by state, at most every `every_seconds`: exactly, off the request path
        (the console's overview estimates the synced ones instead)."""
        now = time.monotonic()
        if self._sampled_at is not None and now - self._sampled_at < every_seconds:
            return
        self._sampled_at = now
        async with transaction(engine) as conn:
            counts, _ = await leads_by_state(conn, estimate_synced=False)
        for state, count in counts.items():
            self.leads.labels(state).set(count)

    def pushed(self, waited_seconds: list[float]) -> None:
        for seconds in waited_seconds:
            self.push_seconds.observe(max(seconds, 0.0))

    def sent(self, total: int, component: str = "airtable-writeback") -> None:
        """The client's running count of requests: what was sent since the last call."""
        if total > self._sent:
            self.requests.labels(component).inc(total - self._sent)
        self._sent = total
