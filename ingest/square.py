"""POST /webhooks/square: verify Square's signature and environment, then store the event."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

import structlog
from pydantic import ValidationError
from square.utils.webhooks_helper import verify_signature

from ingest.answers import Answer, problem, validation_problem
from ingest.key_fingerprint import key_fingerprint
from ingest.square_events import square_new_event
from ingest.store import store_and_answer
from schemas.square import SquareEvent
from schemas.square_environment import ENVIRONMENT_HEADER, HEADER_VALUES, names_environment
from sluice.ids import new_event_id

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from pydantic import SecretStr

    from ingest.record import NewEvent
    from ingest.router import Delivery
    from ingest.state import IngestState
    from schemas.square_environment import SquareEnvironment
    from sluice.settings import Settings

log = structlog.get_logger(__name__)

SIGNATURE_HEADER = "x-square-hmacsha256-signature"
# Delivery headers worth keeping beside the raw body. The signature is a MAC, not a secret: kept
# with the body byte for byte, it lets a stored event be verified again later.
KEPT_HEADERS = (
    SIGNATURE_HEADER,
    "content-type",
    "user-agent",
    ENVIRONMENT_HEADER,
    "square-initial-delivery-timestamp",
    "square-retry-number",
    "square-retry-reason",
    "square-version",
)


async def square_webhook(state: IngestState, delivery: Delivery) -> Answer:
    settings = state.settings
    if not settings.square_verification_configured or settings.square_webhook_url is None:
        return problem(503, "square webhook verification is not configured", "not_configured")
    verified = _verify(settings, settings.square_webhook_url, delivery)
    if isinstance(verified, Answer):
        return verified
    text, signed_by = verified
    # After the signature, so only a sender holding a configured key learns which environment
    # this deployment takes. The header is not signed: this catches a key configured for the
    # wrong environment, not a forger. Square always sends it; a delivery without it is taken.
    named = delivery.headers.get(ENVIRONMENT_HEADER)
    if named and not names_environment(named, settings.square_environment):
        return wrong_environment(named, settings.square_environment)

    try:
        envelope = SquareEvent.model_validate_json(delivery.body)
    except ValidationError as exc:
        return validation_problem("body is not a Square event envelope", exc)

    event = _new_event(envelope, text, delivery.headers, signed_by)
    return await store_and_answer(state, event)


def _verify(settings: Settings, url: str, delivery: Delivery) -> tuple[str, str] | Answer:
    """The body as text and the fingerprint of the key that signed it, or the 401."""
    signature = delivery.headers.get(SIGNATURE_HEADER)
    if not signature:
        return problem(401, f"missing {SIGNATURE_HEADER} header", "missing_signature")
    try:
        text = delivery.body.decode("utf-8")
    except UnicodeDecodeError:
        # Square signs UTF-8 JSON and the SDK verifies over text: bytes that are not UTF-8 cannot
        # carry a valid signature, so this is a signature failure, not a parse error.
        return problem(401, "signature does not match (body is not UTF-8)", "bad_signature")
    signed_by = matching_key(settings.square_webhook_signature_keys, text, signature, url)
    if signed_by is None:
        return problem(401, "signature does not match", "bad_signature")
    return text, signed_by


def wrong_environment(named: str, environment: SquareEnvironment) -> Answer:
    """422: authentic and well formed, but another environment's event; Square retries it until
    the key (or its subscription) is removed, and every refusal is counted."""
    shown = named[:40]
    return problem(
        422,
        f"the delivery is from Square's {shown!r} environment ({ENVIRONMENT_HEADER}); this "
        f"deployment takes {HEADER_VALUES[environment]} deliveries only (SQUARE_ENVIRONMENT="
        f"{environment}): is a signature key of the other environment configured?",
        "wrong_environment",
    )


def matching_key(keys: Sequence[SecretStr], text: str, signature: str, url: str) -> str | None:
    """The fingerprint of the configured key that signed `text` (ingest.key_fingerprint)."""
    for position, key in enumerate(keys, start=1):
        if verify_signature(
            request_body=text,
            signature_header=signature,
            signature_key=key.get_secret_value(),
            notification_url=url,
        ):
            return key_fingerprint(position, key)
    return None


def _new_event(
    envelope: SquareEvent, text: str, delivery_headers: Mapping[str, str], signed_by: str
) -> NewEvent:
    headers = {name: delivery_headers[name] for name in KEPT_HEADERS if name in delivery_headers}
    return square_new_event(
        envelope,
        text,
        event_id=new_event_id(),
        received_at=datetime.now(UTC),
        headers=headers,
        signature_key=signed_by,
    )
