"""Square's webhook envelope: what a body must hold before sluice accepts it."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

SOURCE = "square"
# SearchEvents finds the events of the last 28 days, and nothing older.
EVENTS_HORIZON = timedelta(days=28)
# Square retries a delivery that got no 2xx for up to 72 hours after the event.
REDELIVERY_HORIZON = timedelta(hours=72)
# The event types sluice subscribes to and projects; recovery searches Square's events for them.
EVENT_TYPES = (
    "booking.created",
    "booking.updated",
    "customer.created",
    "customer.updated",
    "customer.deleted",
)

# Booking ids arrive in `data.id` with Square's version suffix ("i2id2g3enyspi7:1").
_VERSION_SUFFIX = re.compile(r":\d+$")


class SquareEventData(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    type: str = Field(min_length=1, max_length=200)
    id: str = Field(min_length=1, max_length=500)
    deleted: bool | None = None
    object: dict[str, Any] | None = None


class SquareEvent(BaseModel):
    """The envelope of every Square notification; unknown fields are kept, not refused."""

    model_config = ConfigDict(extra="allow", frozen=True)

    merchant_id: str = Field(min_length=1, max_length=200)
    location_id: str | None = Field(default=None, max_length=200)
    type: str = Field(min_length=1, max_length=200, pattern=r"^[a-z0-9_]+(\.[a-z0-9_]+)+$")
    event_id: str = Field(min_length=1, max_length=200)
    created_at: AwareDatetime
    data: SquareEventData

    @property
    def entity_type(self) -> str:
        return self.data.type

    @property
    def entity_id(self) -> str:
        if self.data.type == "booking":
            return _VERSION_SUFFIX.sub("", self.data.id)
        return self.data.id
