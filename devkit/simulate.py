"""Realistic, correctly signed Square deliveries, for `sluice simulate` and the tests."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import string
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from devkit.square_envelope import square_envelope, square_timestamp
from schemas.square_environment import ENVIRONMENT_HEADER, HEADER_VALUES
from sluice.ids import new_event_id

if TYPE_CHECKING:
    from outbox.enqueue import OutboxMessage
    from schemas.square_environment import SquareEnvironment

# The merchant and location simulated events come from; the dev fake Square is this merchant.
SIMULATED_MERCHANT_ID = "6SSW7HV8K2ST5"
SIMULATED_LOCATION_ID = "L8TZNMX9Q2Z5B"


def square_signature(key: str, url: str, body: bytes) -> str:
    digest = hmac.new(key.encode(), url.encode() + body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def _square_id(length: int = 14) -> str:
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(length))


def booking_object(
    booking_id: str,
    *,
    version: int,
    customer_id: str,
    status: str = "ACCEPTED",
    start_at: datetime | None = None,
    location_id: str = SIMULATED_LOCATION_ID,
) -> dict[str, Any]:
    now = datetime.now(UTC)
    start = start_at or (now + timedelta(days=1)).replace(minute=0, second=0, microsecond=0)
    return {
        "id": booking_id,
        "version": version,
        "status": status,
        "created_at": square_timestamp(now - timedelta(minutes=5)),
        "updated_at": square_timestamp(now),
        "start_at": square_timestamp(start),
        "location_id": location_id,
        "customer_id": customer_id,
        "customer_note": "",
        "seller_note": "",
        "location_type": "BUSINESS_LOCATION",
        "source": "FIRST_PARTY_MERCHANT",
        "appointment_segments": [
            {
                "duration_minutes": 60,
                "service_variation_id": "GUN7HNQBH7ZRARYZN52E7O4B",
                "team_member_id": "TMXUrsBWWcHTt79t",
                "service_variation_version": 1650400214736,
                "any_team_member": False,
                "intermission_minutes": 0,
            }
        ],
    }


def customer_object(customer_id: str, *, version: int) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "id": customer_id,
        "version": version,
        "created_at": square_timestamp(now - timedelta(days=3)),
        "updated_at": square_timestamp(now),
        "given_name": "Amelia",
        "family_name": "Earhart",
        "email_address": "amelia.earhart@example.com",
        "phone_number": "+1-212-555-4240",
        "preferences": {"email_unsubscribed": False},
        "creation_source": "THIRD_PARTY",
    }


def square_event(
    event_type: str,
    *,
    merchant_id: str = SIMULATED_MERCHANT_ID,
    entity_id: str | None = None,
    version: int = 1,
    customer_id: str | None = None,
    event_id: str | None = None,
    start_at: datetime | None = None,
) -> dict[str, Any]:
    """A webhook body in Square's wire format, for one of schemas.square.EVENT_TYPES (a
    booking starts at `start_at`, by default tomorrow)."""
    entity = event_type.partition(".")[0]
    obj: dict[str, Any]
    if entity == "booking":
        obj = booking_object(
            entity_id or _square_id(14),
            version=version,
            customer_id=customer_id or _square_id(26).upper(),
            start_at=start_at,
        )
    elif entity == "customer":
        obj = customer_object(entity_id or _square_id(26).upper(), version=version)
    else:
        raise ValueError(f"unknown Square event type {event_type!r}")
    return square_envelope(
        event_type,
        obj,
        merchant_id=merchant_id,
        location_id=SIMULATED_LOCATION_ID,
        event_id=event_id,
    )


def square_headers(
    body: bytes, *, key: str, url: str, environment: SquareEnvironment = "production"
) -> dict[str, str]:
    """The headers of a first delivery of `body` from Square's `environment`, signed with `key`."""
    return {
        "content-type": "application/json",
        "user-agent": "Square Connect v2",
        ENVIRONMENT_HEADER: HEADER_VALUES[environment],
        "square-initial-delivery-timestamp": square_timestamp(datetime.now(UTC)),
        "x-square-hmacsha256-signature": square_signature(key, url, body),
    }


def signed_square_delivery(
    event: dict[str, Any],
    *,
    key: str,
    url: str,
    retry_number: int | None = None,
    environment: SquareEnvironment = "production",
) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(event).encode()
    headers = square_headers(body, key=key, url=url, environment=environment)
    if retry_number:
        headers["square-retry-number"] = str(retry_number)
        headers["square-retry-reason"] = "http_timeout"
    return body, headers


def square_kafka_message(event: dict[str, Any]) -> OutboxMessage:
    """What the relay publishes for this webhook body: value, key and headers, as ingest builds
    them. For tests and benchmarks that feed consumers without going through ingest."""
    from ingest.square_events import square_outbox_message  # noqa: PLC0415 - keep the CLI light
    from schemas.square import SquareEvent  # noqa: PLC0415

    text = json.dumps(event)
    envelope = SquareEvent.model_validate_json(text)
    return square_outbox_message(
        envelope, text, event_id=new_event_id(), received_at=datetime.now(UTC)
    )
