"""POST /webhooks/square: verify Square's signature, then record the event durably."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import structlog
from pydantic import ValidationError
from square.utils.webhooks_helper import verify_signature

from ingest.body import BodyTooLargeError, read_limited
from ingest.record import RejectedEventError
from ingest.responses import accepted, problem, validation_problem
from ingest.square_events import square_new_event
from schemas.square import SOURCE, SquareEvent
from sluice.db import DatabaseUnavailableError

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import JSONResponse

    from ingest.record import NewEvent
    from ingest.state import IngestState

log = structlog.get_logger(__name__)

SIGNATURE_HEADER = "x-square-hmacsha256-signature"
# Delivery headers worth keeping beside the raw body (never the signature itself).
KEPT_HEADERS = (
    "content-type",
    "user-agent",
    "square-environment",
    "square-initial-delivery-timestamp",
    "square-retry-number",
    "square-retry-reason",
    "square-version",
)
# Square gives up on a delivery after 10 s; answer 503 before that so it retries.
ACK_DEADLINE_SECONDS = 8.0


async def square_webhook(request: Request) -> JSONResponse:  # noqa: PLR0911 - one return per answer
    state: IngestState = request.app.state.ingest
    settings = state.settings
    if not settings.square_verification_configured or settings.square_webhook_url is None:
        return problem(503, "square webhook verification is not configured", "not_configured")
    try:
        body = await read_limited(request, settings.max_body_bytes)
    except BodyTooLargeError as exc:
        return problem(413, str(exc), "too_large")

    signature = request.headers.get(SIGNATURE_HEADER)
    if not signature:
        return problem(401, f"missing {SIGNATURE_HEADER} header", "missing_signature")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return problem(400, "body is not valid UTF-8", "malformed")
    url = settings.square_webhook_url
    if not any(
        verify_signature(
            request_body=text,
            signature_header=signature,
            signature_key=key.get_secret_value(),
            notification_url=url,
        )
        for key in settings.square_webhook_signature_keys
    ):
        return problem(401, "signature does not match", "bad_signature")

    try:
        envelope = SquareEvent.model_validate_json(body)
    except ValidationError as exc:
        return validation_problem("body is not a Square event envelope", exc)

    event = _new_event(envelope, text, request)
    with structlog.contextvars.bound_contextvars(
        source=SOURCE, provider_event_id=envelope.event_id, event_type=envelope.type
    ):
        try:
            recorded = await asyncio.wait_for(state.writer.record(event), ACK_DEADLINE_SECONDS)
        except (DatabaseUnavailableError, TimeoutError) as exc:
            log.warning("square.store_unavailable", error=str(exc))
            return problem(
                503,
                "database unavailable, retry later",
                "unavailable",
                headers={"Retry-After": "5"},
            )
        except RejectedEventError as exc:
            return problem(400, str(exc), "malformed")
        structlog.contextvars.bind_contextvars(event_id=str(recorded.id))
        log.debug("square.accepted", duplicate=recorded.duplicate)
    return accepted(recorded)


def _new_event(envelope: SquareEvent, text: str, request: Request) -> NewEvent:
    headers = {name: request.headers[name] for name in KEPT_HEADERS if name in request.headers}
    return square_new_event(
        envelope, text, event_id=uuid.uuid4(), received_at=datetime.now(UTC), headers=headers
    )
