"""Where an event came from, as its Kafka headers say: delivered by the provider, written by the
reconciler (its synthetic events), or redriven from the dead letters. A replay from the store
sends the stored event again unchanged, so it carries the origin it had."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from collections.abc import Mapping

# Stored with every event a reconciler writes and sent with it on Kafka.
SYNTHETIC_HEADER = "sluice-synthetic"
SYNTHETIC_MARK = "reconcile"
# Sent with a redriven message: the id of the dead letter it came from.
REDRIVE_HEADER = "sluice-redrive-of"

ORIGIN_HEADERS = frozenset({SYNTHETIC_HEADER, REDRIVE_HEADER})

Origin = Literal["delivered", "reconcile", "redrive"]


def origin_of(headers: Mapping[str, str]) -> Origin:
    if REDRIVE_HEADER in headers:
        return "redrive"
    if headers.get(SYNTHETIC_HEADER) == SYNTHETIC_MARK:
        return "reconcile"
    return "delivered"
