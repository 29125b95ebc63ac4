"""The Airtable backstop.

1. Drain the webhook payload backlog: fetch every registered webhook's payloads from its stored
   cursor (ingest/airtable_fetch.py, the same path a ping triggers), so nothing Airtable still
   holds for us is left behind. An error payload met on the way (Airtable stopped serving the
   webhook) is an error of the run, named after the webhook.
2. Sweep the mapped tables page by page (recovery/airtable_sweep.py): every record with `full`,
   otherwise those changed within the last `lookback_minutes`. A record whose row is missing or
   differs in a source-owned value gets a snapshot event; with `full`, a row whose record is gone
   gets a destroyed snapshot; a lead whose app-owned values Airtable lacks is handed to the
   write-back again.

Snapshots are versioned by the row version the sweep saw and apply only while the row is still
at it, so a webhook change that lands between the sweep and the consumer wins (the rule and the
snapshot ids are explained in recovery/airtable_sweep.py). The reconciler never writes a
projection.

Airtable calls share one per-base rate limiter; both steps' calls to an unavailable Airtable
(5xx, or a 429 after the limiter's pause) are retried (airtable_sweep.RETRY: 4 tries), and
Airtable's circuit breaker ends the run when it keeps failing (AIRTABLE_BREAKER_THRESHOLD,
AIRTABLE_BREAKER_RESET_SECONDS). The summary's `requests` counts every request the run sent to
Airtable, retries included; `sweep.requests` the sweep's share.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import text

from recovery.backstop import ENDS_THE_RUN, end_run, isolated
from recovery.progress import SILENT, Progress
from sluice.db import transaction
from sluice.resilience import ProviderCalls

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlalchemy.ext.asyncio import AsyncEngine

    from providers.airtable import AirtableClient
    from recovery.summary import RunSummary
    from sluice.resilience import StateHook
    from sluice.settings import Settings

_WEBHOOKS = text("SELECT webhook_id FROM airtable_webhooks ORDER BY webhook_id")

MAX_LOOKBACK_MINUTES = 1440  # a day; beyond that, sweep everything (--full)


@dataclass(frozen=True, slots=True)
class AirtableOptions:
    lookback_minutes: int = 60
    full: bool = False


async def reconcile_airtable(  # noqa: PLR0913 - the run's parts, by keyword
    settings: Settings,
    engine: AsyncEngine,
    summary: RunSummary,
    options: AirtableOptions,
    *,
    progress: Progress = SILENT,
    on_breaker_change: StateHook | None = None,
) -> None:
    from providers.airtable import AirtableClient, breaker  # noqa: PLC0415 - needs pyairtable
    from recovery.airtable_sweep import RETRY, SweepScope, sweep  # noqa: PLC0415

    started = datetime.now(UTC)
    summary.details["lookback_minutes"] = None if options.full else options.lookback_minutes
    summary.details["full"] = options.full
    made: list[AirtableClient] = []

    @functools.cache
    def client() -> AirtableClient:
        # Made on first use: a run with nothing to fetch or sweep needs no Airtable key.
        made.append(AirtableClient.from_settings(settings))
        return made[-1]

    calls = ProviderCalls(breaker(settings, on_change=on_breaker_change), RETRY)
    try:
        if not await _drain(engine, client, calls, summary):
            return
        cutoff = None if options.full else started - timedelta(minutes=options.lookback_minutes)
        scope = SweepScope(full=options.full, modified_after=cutoff)
        await sweep(engine, client, calls, summary, scope, progress=progress)
    finally:
        summary.details["requests"] = sum(c.requests_sent for c in made)


async def _drain(
    engine: AsyncEngine,
    client: Callable[[], AirtableClient],
    calls: ProviderCalls,
    summary: RunSummary,
) -> bool:
    """Step 1; False when the database is gone or Airtable's breaker opened: the run stops.

    A webhook's fetch is retried whole (each page is committed with its cursor, so a retry goes
    on from the stored cursor)."""
    from ingest.airtable_fetch import fetch_webhook  # noqa: PLC0415

    tally = summary.entity("payload")
    async with transaction(engine) as conn:
        webhook_ids = [row[0] for row in await conn.execute(_WEBHOOKS)]
    try:
        for webhook_id in webhook_ids:
            with isolated(summary, f"webhook:{webhook_id}"):
                result = await calls(functools.partial(fetch_webhook, engine, client(), webhook_id))
                tally.scanned += result.changes
                tally.created += result.recorded
                tally.skipped += result.changes - result.recorded
                for code in result.error_codes:
                    summary.error(
                        f"webhook:{webhook_id}", f"Airtable error payload {code}: recreate it"
                    )
    except ENDS_THE_RUN as exc:
        end_run(summary, exc)
        return False
    summary.details["webhooks_drained"] = len(webhook_ids)
    return True
