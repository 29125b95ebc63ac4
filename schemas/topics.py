"""Topic names: a closed set, so producers and consumers cannot drift apart."""

from __future__ import annotations

from enum import StrEnum


class Topic(StrEnum):
    SQUARE_BOOKINGS = "square.bookings"
    SQUARE_CUSTOMERS = "square.customers"
    SQUARE_EVENTS = "square.events"
    AIRTABLE_PINGS = "airtable.pings"
    AIRTABLE_RECORDS = "airtable.records"
    APP_CHANGES = "app.changes"


def dlq_topic(topic: str) -> str:
    return f"{topic}.dlq"


_SQUARE_TOPIC_BY_ENTITY = {
    "booking": Topic.SQUARE_BOOKINGS,
    "customer": Topic.SQUARE_CUSTOMERS,
}
# Looked up once: member access on an Enum class is slow on Python 3.11, and this runs per delivery.
_SQUARE_OTHER = Topic.SQUARE_EVENTS


def square_topic(entity_type: str | None) -> Topic:
    return _SQUARE_TOPIC_BY_ENTITY.get(entity_type or "", _SQUARE_OTHER)


# What each consumer group reads by default (consumers/registry.py names the groups).
CONSUMER_TOPICS: dict[str, tuple[str, ...]] = {
    "jobs": (Topic.SQUARE_BOOKINGS.value, Topic.SQUARE_CUSTOMERS.value),
    "airtable-fetcher": (Topic.AIRTABLE_PINGS.value,),
    "leads": (Topic.AIRTABLE_RECORDS.value,),
    "airtable-writeback": (Topic.APP_CHANGES.value,),
}
