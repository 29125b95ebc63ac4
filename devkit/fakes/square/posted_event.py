"""`POST /_fake/events`: a Square event handed to the fake as something that happened at Square.

Development tools (`sluice simulate square`, the chaos run) make an event, record it here as
Square's truth, and deliver it (or, for a lost delivery, do not). The body is the webhook
envelope as Square documents it: `merchant_id`, `type`, `event_id`, `created_at`, and
`data{type, id, object{<type>: {...}}}`, the object carrying its `id` and `version`. Anything
else is refused with a 400 that says what is wrong, in Square's error shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from devkit.fakes.square.wire import SquareBadRequest, member, parse_time
from schemas.square import EVENT_TYPES

if TYPE_CHECKING:
    from datetime import datetime


@dataclass(frozen=True, slots=True)
class PostedEvent:
    body: dict[str, Any]  # the envelope, kept exactly as posted
    entity: str  # "booking" or "customer"
    obj: dict[str, Any]  # the object as it is after the event
    deleted: bool
    at: datetime  # the event's `created_at`


def parse_posted_event(body: dict[str, Any]) -> PostedEvent:
    event_type = body.get("type")
    if event_type not in EVENT_TYPES:
        raise SquareBadRequest(
            "INVALID_ENUM_VALUE", f"`type` must be one of {', '.join(EVENT_TYPES)}.", "type"
        )
    for key in ("merchant_id", "event_id", "created_at"):
        if not isinstance(body.get(key), str) or not body[key]:
            raise SquareBadRequest("MISSING_REQUIRED_PARAMETER", f"`{key}` is required.", key)
    try:
        at = parse_time(body["created_at"])
    except ValueError:
        raise SquareBadRequest(
            "INVALID_TIME", "`created_at` must be an RFC 3339 timestamp.", "created_at"
        ) from None
    entity, _, action = str(event_type).partition(".")
    data = member(body, "data", "data")
    if data.get("type") != entity:
        raise SquareBadRequest(
            "INVALID_VALUE", f"`data.type` must be {entity!r} for a {event_type}.", "data.type"
        )
    obj = member(member(data, "object", "data.object"), entity, f"data.object.{entity}")
    if not isinstance(obj.get("id"), str) or not obj["id"]:
        raise SquareBadRequest(
            "MISSING_REQUIRED_PARAMETER",
            f"`data.object.{entity}.id` is required.",
            f"data.object.{entity}.id",
        )
    version = obj.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise SquareBadRequest(
            "INVALID_VALUE",
            f"`data.object.{entity}.version` must be a non-negative integer.",
            f"data.object.{entity}.version",
        )
    return PostedEvent(body, entity, obj, action == "deleted", at)
