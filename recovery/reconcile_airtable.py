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

Airtable calls share one per-base rate limiter; an unavailable Airtable (5xx, or a 429 after
the limiter's pause) is retried with jittered backoff, and a circuit breaker ends the run when
it keeps failing (AIRTABLE_BREAKER_THRESHOLD, AIRTABLE_BREAKER_RESET_SECONDS).
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import text

from recovery.progress import SILENT, Progress
from sluice.db import DatabaseUnavailableError, transaction

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlalchemy.ext.asyncio import AsyncEngine

    from ingest.airtable_api import AirtableClient
    from recovery.runs import AirtableOptions
    from recovery.summary import RunSummary
    from sluice.settings import Settings

_WEBHOOKS = text("SELECT webhook_id FROM airtable_webhooks ORDER BY webhook_id")


async def reconcile_airtable(
    settings: Settings,
    engine: AsyncEngine,
    summary: RunSummary,
    options: AirtableOptions,
    *,
    progress: Progress = SILENT,
) -> None:
    from consumers.writeback_pusher import breaker_counts  # noqa: PLC0415 - needs pyairtable
    from ingest.airtable_api import AirtableClient  # noqa: PLC0415
    from recovery.airtable_sweep import AirtableCalls, SweepScope, sweep  # noqa: PLC0415
    from sluice.resilience import CircuitBreaker  # noqa: PLC0415

    started = datetime.now(UTC)
    summary.details["lookback_minutes"] = None if options.full else options.lookback_minutes
    summary.details["full"] = options.full

    @functools.cache
    def client() -> AirtableClient:
        # Made on first use: a run with nothing to fetch or sweep needs no Airtable key.
        return AirtableClient.from_settings(settings)

    if not await _drain(engine, client, summary):
        return
    cutoff = None if options.full else started - timedelta(minutes=options.lookback_minutes)
    breaker = CircuitBreaker(
        threshold=settings.airtable_breaker_threshold,
        reset_seconds=settings.airtable_breaker_reset_seconds,
        counts=breaker_counts,
    )
    calls = AirtableCalls(breaker)
    scope = SweepScope(full=options.full, modified_after=cutoff)
    await sweep(engine, client, calls, summary, scope, progress=progress)


async def _drain(
    engine: AsyncEngine, client: Callable[[], AirtableClient], summary: RunSummary
) -> bool:
    """Step 1; False when the database is gone and the run cannot go on."""
    from ingest.airtable_fetch import fetch_webhook  # noqa: PLC0415

    tally = summary.entity("payload")
    async with transaction(engine) as conn:
        webhook_ids = [row[0] for row in await conn.execute(_WEBHOOKS)]
    for webhook_id in webhook_ids:
        try:
            result = await fetch_webhook(engine, client(), webhook_id)
        except DatabaseUnavailableError as exc:
            summary.error("run", exc)
            return False
        except Exception as exc:  # noqa: BLE001 - isolated to its webhook
            summary.error(f"webhook:{webhook_id}", exc)
            continue
        tally.scanned += result.changes
        tally.created += result.recorded
        tally.skipped += result.changes - result.recorded
        for code in result.error_codes:
            summary.error(f"webhook:{webhook_id}", f"Airtable error payload {code}: recreate it")
    summary.details["webhooks_drained"] = len(webhook_ids)
    return True
