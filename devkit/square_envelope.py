"""Square's event envelope, built in one place: the fake Square's event log and the signed test
deliveries of `sluice simulate` both take their webhook bodies from here.

A SearchEvents answer carries the same envelope as the webhook, so one builder serves both.
"""

from __future__ import annotations

import copy
import uuid
from datetime import UTC, datetime
from typing import Any


def square_timestamp(value: datetime) -> str:
    """RFC 3339 in UTC with milliseconds and a `Z`, as Square writes event times."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def square_envelope(
    event_type: str,
    obj: dict[str, Any],
    *,
    merchant_id: str,
    location_id: str | None = None,
    event_id: str | None = None,
    created_at: datetime | None = None,
) -> dict[str, Any]:
    """The body Square sends for `event_type` (`booking.created`, `customer.deleted`, ...) about
    `obj`, which is copied: later changes to the object never reach an event already made."""
    entity, _, action = event_type.partition(".")
    if not entity or not action:
        raise ValueError(f"not a Square event type: {event_type!r}")
    # Bookings name their version in `data.id` ("i2id2g3enyspi7:1"); other objects do not.
    data_id = f"{obj['id']}:{obj['version']}" if entity == "booking" else str(obj["id"])
    data: dict[str, Any] = {"type": entity, "id": data_id, "object": {entity: copy.deepcopy(obj)}}
    if action == "deleted":
        data["deleted"] = True
    envelope: dict[str, Any] = {"merchant_id": merchant_id}
    if location_id is not None:
        envelope["location_id"] = location_id
    envelope |= {
        "type": event_type,
        "event_id": event_id or str(uuid.uuid4()),
        "created_at": square_timestamp(created_at or datetime.now(UTC)),
        "data": data,
    }
    return envelope
