"""The Airtable backstop.

1. Drain the webhook payload backlog: fetch every registered webhook's payloads from its stored
   cursor (ingest/airtable_fetch.py, the same path a ping triggers), so nothing Airtable still
   holds for us is left behind.
2. Sweep the mapped tables page by page and emit synthetic events for missing or stale leads,
   and re-emit write-back for app-owned values Airtable does not have yet.

Step 2 needs a record listing on the Airtable client and the write-back path; until both exist
the summary says `"sweep": "not_available"` and the run does step 1 only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import text

from sluice.db import DatabaseUnavailableError, transaction

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from recovery.runs import AirtableOptions
    from recovery.summary import RunSummary
    from sluice.settings import Settings

_WEBHOOKS = text("SELECT webhook_id FROM airtable_webhooks ORDER BY webhook_id")


async def reconcile_airtable(
    settings: Settings, engine: AsyncEngine, summary: RunSummary, options: AirtableOptions
) -> None:
    from ingest.airtable_api import AirtableClient  # noqa: PLC0415
    from ingest.airtable_fetch import fetch_webhook  # noqa: PLC0415

    summary.details["lookback_minutes"] = None if options.full else options.lookback_minutes
    summary.details["full"] = options.full
    tally = summary.entity("payload")
    async with transaction(engine) as conn:
        webhook_ids = [row[0] for row in await conn.execute(_WEBHOOKS)]
    if webhook_ids:
        client = AirtableClient.from_settings(settings)
        for webhook_id in webhook_ids:
            try:
                result = await fetch_webhook(engine, client, webhook_id)
            except DatabaseUnavailableError as exc:
                summary.error("run", exc)
                return
            except Exception as exc:  # noqa: BLE001 - isolated to its webhook
                summary.error(f"webhook:{webhook_id}", exc)
                continue
            tally.scanned += result.changes
            tally.created += result.recorded
            tally.skipped += result.changes - result.recorded
    summary.details["webhooks_drained"] = len(webhook_ids)
    summary.details["sweep"] = "not_available"
