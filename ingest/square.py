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
from ingest.record import NewEvent, RejectedEventError
from ingest.responses import accepted, problem, validation_problem
from outbox.enqueue import OutboxMessage
from schemas.envelope import CloudEvent, encode_with_raw_data
from schemas.square import SOURCE, SquareEvent
from schemas.topics import square_topic
from sluice.db import DatabaseUnavailableError

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import JSONResponse

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

    event = _new_event(envelope, text, body, request)
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
        log.info("square.accepted", duplicate=recorded.duplicate)
    return accepted(recorded)


def _new_event(envelope: SquareEvent, text: str, body: bytes, request: Request) -> NewEvent:
    received_at = datetime.now(UTC)
    event_id = uuid.uuid4()
    headers = {name: request.headers[name] for name in KEPT_HEADERS if name in request.headers}
    cloud_event = CloudEvent[None](
        id=str(event_id),
        source=SOURCE,
        type=envelope.type,
        subject=envelope.entity_id,
        time=envelope.created_at,
        data=None,
        providereventid=envelope.event_id,
        receivedat=received_at,
        entitytype=envelope.entity_type,
    )
    topic = square_topic(envelope.entity_type)
    message = OutboxMessage(
        topic=topic,
        key=envelope.entity_id,
        payload_json=encode_with_raw_data(cloud_event, text),
        headers=cloud_event.kafka_headers(),
        event_id=event_id,
    )
    return NewEvent(
        id=event_id,
        source=SOURCE,
        provider_event_id=envelope.event_id,
        event_type=envelope.type,
        entity_type=envelope.entity_type,
        entity_id=envelope.entity_id,
        occurred_at=envelope.created_at,
        received_at=received_at,
        body=body,
        headers=headers,
        retry_number=_int_or_none(headers.get("square-retry-number")),
        retry_reason=headers.get("square-retry-reason"),
        initial_delivery_at=_datetime_or_none(headers.get("square-initial-delivery-timestamp")),
        message=message,
    )


def _int_or_none(value: str | None) -> int | None:
    if value is None or not value.isdigit() or len(value) > 9:
        return None
    return int(value)


def _datetime_or_none(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None
