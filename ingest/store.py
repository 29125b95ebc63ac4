"""The last step of every webhook endpoint: record the event durably, then answer.

One place decides what each outcome means to the provider: 2xx only after the commit, 503 with
Retry-After when the database is out or slow (the provider retries), 400 for content the database
refuses (a retry would fail the same way).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import structlog

from ingest.record import RejectedEventError
from ingest.responses import accepted, problem
from sluice.db import DatabaseUnavailableError

if TYPE_CHECKING:
    from starlette.responses import JSONResponse

    from ingest.record import NewEvent
    from ingest.state import IngestState

log = structlog.get_logger(__name__)

# Square gives up on a delivery after 10 s, Airtable after 25 s: answer 503 before either, so the
# provider retries rather than counting a timeout.
ACK_DEADLINE_SECONDS = 8.0


async def store_and_answer(state: IngestState, event: NewEvent) -> JSONResponse:
    with structlog.contextvars.bound_contextvars(
        source=event.source, provider_event_id=event.provider_event_id, event_type=event.event_type
    ):
        try:
            recorded = await asyncio.wait_for(state.writer.record(event), ACK_DEADLINE_SECONDS)
        except (DatabaseUnavailableError, TimeoutError) as exc:
            log.warning("ingest.store_unavailable", error=str(exc))
            return problem(
                503,
                "database unavailable, retry later",
                "unavailable",
                headers={"Retry-After": "5"},
            )
        except RejectedEventError as exc:
            return problem(400, str(exc), "malformed")
        log.debug("ingest.accepted", event_id=str(recorded.id), duplicate=recorded.duplicate)
    return accepted(recorded)
