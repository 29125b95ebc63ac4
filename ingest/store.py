"""The last step of every webhook endpoint: record the event durably, then answer.

One place decides what each outcome means to the provider: 2xx only after the commit, 503 with
Retry-After when the database is out or slow (the provider retries), 400 for content the database
refuses (a retry would fail the same way).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import structlog

from ingest.answers import accepted, problem
from ingest.record import RejectedEventError
from sluice.db import DatabaseUnavailableError
from sluice.jsontext import raw_json_contains_nul

if TYPE_CHECKING:
    from ingest.answers import Answer
    from ingest.record import NewEvent
    from ingest.state import IngestState

log = structlog.get_logger(__name__)

# Square gives up on a delivery after 10 s, Airtable after 25 s: answer 503 before either, so the
# provider retries rather than counting a timeout.
ACK_DEADLINE_SECONDS = 8.0


async def store_and_answer(state: IngestState, event: NewEvent) -> Answer:
    if raw_json_contains_nul(event.body):
        # Consumers could never store it (PostgreSQL text and jsonb hold no NUL): refuse it now.
        return problem(400, "strings cannot contain the NUL character (\\u0000)", "malformed")
    try:
        async with asyncio.timeout(ACK_DEADLINE_SECONDS):
            recorded = await state.writer.record(event)
    except (DatabaseUnavailableError, TimeoutError) as exc:
        log.warning("ingest.store_unavailable", error=str(exc), **_identity(event))
        return problem(
            503, "database unavailable, retry later", "unavailable", headers={"Retry-After": "5"}
        )
    except RejectedEventError as exc:
        log.info("ingest.rejected", error=str(exc), **_identity(event))
        return problem(400, str(exc), "malformed")
    return accepted(recorded)


def _identity(event: NewEvent) -> dict[str, str]:
    # Passed to each line rather than bound to the context for the request: these are the only
    # lines a request logs, and binding costs on every delivery what logging costs on a few.
    return {
        "event_id": str(event.id),
        "source": event.source,
        "provider_event_id": event.provider_event_id,
        "event_type": event.event_type,
    }
