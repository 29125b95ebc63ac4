"""Building a Square event's rows: the inbound event and the outbox message the relay publishes.

One builder for every path that brings Square events in — the webhook, the reconciler's
synthetic events, and `sluice replay store`, which rebuilds the outbox message of a stored event
— so a consumer cannot tell them apart by shape.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from ingest.record import NewEvent
from outbox.enqueue import OutboxMessage
from schemas.envelope import EventHead, encode_with_raw_data
from schemas.square import SOURCE
from schemas.topics import square_topic

if TYPE_CHECKING:
    import uuid
    from collections.abc import Mapping

    from schemas.square import SquareEvent


def square_new_event(  # noqa: PLR0913 - an event has that many parts
    envelope: SquareEvent,
    text: str,
    *,
    event_id: uuid.UUID,
    received_at: datetime,
    headers: Mapping[str, str],
    extra_headers: Mapping[str, str] | None = None,
    signature_key: str | None = None,
) -> NewEvent:
    """The inbound event for a Square body (`text`, kept byte for byte) and its outbox message.

    `headers` are the delivery headers kept beside the body; `extra_headers` go on the Kafka
    message too (the reconciler marks its synthetic events this way). `signature_key` is the
    fingerprint of the key that verified a webhook delivery (None for any other path).
    """
    message = square_outbox_message(envelope, text, event_id=event_id, received_at=received_at)
    if extra_headers:
        message.headers.update(extra_headers)
    return NewEvent(
        id=event_id,
        source=SOURCE,
        provider_event_id=envelope.event_id,
        event_type=envelope.type,
        entity_type=envelope.entity_type,
        entity_id=envelope.entity_id,
        occurred_at=envelope.created_at,
        received_at=received_at,
        body=text.encode(),
        headers=dict(headers),
        retry_number=_int_or_none(headers.get("square-retry-number")),
        retry_reason=headers.get("square-retry-reason"),
        initial_delivery_at=_datetime_or_none(headers.get("square-initial-delivery-timestamp")),
        message=message,
        signature_key=signature_key,
    )


def square_outbox_message(
    envelope: SquareEvent, text: str, *, event_id: uuid.UUID, received_at: datetime
) -> OutboxMessage:
    """The outbox message for a Square event: exactly what the relay publishes to Kafka.

    Public so tests, benchmarks and replay can put realistic messages on a topic without ingest.
    """
    cloud_event = EventHead(
        id=str(event_id),
        source=SOURCE,
        type=envelope.type,
        subject=envelope.entity_id,
        time=envelope.created_at,
        providereventid=envelope.event_id,
        receivedat=received_at,
        entitytype=envelope.entity_type,
    )
    return OutboxMessage(
        topic=square_topic(envelope.entity_type),
        key=envelope.entity_id,
        payload_json=encode_with_raw_data(cloud_event, text),
        headers=cloud_event.kafka_headers(),
        event_id=event_id,
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
