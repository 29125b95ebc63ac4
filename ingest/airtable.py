"""POST /webhooks/airtable: verify the ping's MAC, then record the ping durably.

An Airtable notification says only "webhook W of base B has new payloads". It is stored like any
other event (event row + outbox row on `airtable.pings`, one transaction, group commit) and the
payload fetcher, a consumer of that topic, fetches the changes. Spurious and coalesced pings
are harmless: a fetch with nothing new reads one empty page.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import structlog
from pydantic import ValidationError

from ingest.answers import problem, validation_problem
from ingest.key_fingerprint import key_fingerprint
from ingest.record import NewEvent
from ingest.store import store_and_answer
from outbox.enqueue import OutboxMessage
from schemas.airtable import SOURCE, AirtablePing
from schemas.envelope import EventHead, encode_with_raw_data
from schemas.topics import Topic
from sluice.ids import new_event_id

if TYPE_CHECKING:
    from collections.abc import Mapping

    from pydantic import SecretStr

    from ingest.answers import Answer
    from ingest.router import Delivery
    from ingest.state import IngestState

log = structlog.get_logger(__name__)

MAC_HEADER = "x-airtable-content-mac"
PING_TYPE = "airtable.ping"
# The MAC is kept with the body byte for byte, so a stored ping can be verified again later.
KEPT_HEADERS = (MAC_HEADER, "content-type", "user-agent")


def content_mac(secret: bytes, body: bytes) -> str:
    return "hmac-sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class Signer:
    webhook_id: str
    fingerprint: str  # ingest.key_fingerprint: the webhook id and its secret's digest


def matching_webhook(secrets: Mapping[str, SecretStr], body: bytes, header: str) -> Signer | None:
    """The webhook whose MAC secret signed `body`, if any.

    Checked over the raw bytes before anything is parsed, and in constant time. (pyairtable's
    `WebhookNotification.from_request` compares with `!=` and needs an ASCII body.)
    """
    found = None
    for webhook_id, secret in secrets.items():
        try:
            key = base64.b64decode(secret.get_secret_value(), validate=True)
        except (binascii.Error, ValueError):
            continue
        if hmac.compare_digest(content_mac(key, body), header):
            found = Signer(webhook_id, key_fingerprint(webhook_id, secret))
    return found


async def airtable_webhook(state: IngestState, delivery: Delivery) -> Answer:
    settings = state.settings
    if not settings.airtable_webhook_secrets:
        return problem(503, "airtable webhook secrets are not configured", "not_configured")
    body = delivery.body
    header = delivery.headers.get(MAC_HEADER)
    if not header:
        return problem(401, f"missing {MAC_HEADER} header", "missing_signature")
    signed_by = matching_webhook(settings.airtable_webhook_secrets, body, header)
    if signed_by is None:
        return problem(401, "MAC does not match any known webhook", "bad_signature")
    try:
        ping = AirtablePing.model_validate_json(body)
    except ValidationError as exc:
        return validation_problem("body is not an Airtable notification", exc)
    if ping.webhook.id != signed_by.webhook_id:
        # Signed with one webhook's secret but naming another: not a ping we can trust.
        return problem(401, "webhook in body does not match the MAC", "unknown_webhook")

    event = _new_event(ping, body, delivery.headers, signed_by.fingerprint)
    return await store_and_answer(state, event)


def _new_event(
    ping: AirtablePing, body: bytes, delivery_headers: Mapping[str, str], signed_by: str
) -> NewEvent:
    received_at = datetime.now(UTC)
    event_id = new_event_id()
    cloud_event = EventHead(
        id=str(event_id),
        source=SOURCE,
        type=PING_TYPE,
        subject=ping.webhook.id,
        time=ping.timestamp,
        providereventid=ping.provider_event_id,
        receivedat=received_at,
        entitytype="webhook",
    )
    message = OutboxMessage(
        topic=Topic.AIRTABLE_PINGS,
        key=ping.webhook.id,
        payload_json=encode_with_raw_data(cloud_event, body.decode()),
        headers=cloud_event.kafka_headers(),
        event_id=event_id,
    )
    return NewEvent(
        id=event_id,
        source=SOURCE,
        provider_event_id=ping.provider_event_id,
        event_type=PING_TYPE,
        entity_type="webhook",
        entity_id=ping.webhook.id,
        occurred_at=ping.timestamp,
        received_at=received_at,
        body=body,
        headers={name: delivery_headers[name] for name in KEPT_HEADERS if name in delivery_headers},
        retry_number=None,
        retry_reason=None,
        initial_delivery_at=None,
        message=message,
        signature_key=signed_by,
    )
