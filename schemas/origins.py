"""Where an event came from, as its Kafka headers say: delivered by the provider, found by
recovery in the provider's own event log (Square's Events API) when its delivery was lost,
written by the reconciler (its synthetic events), or redriven from the dead letters. A replay
from the store sends the stored event again unchanged, so it carries the origin it had."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from collections.abc import Mapping

# Stored with every event a reconciler writes and sent with it on Kafka.
SYNTHETIC_HEADER = "sluice-synthetic"
SYNTHETIC_MARK = "reconcile"
# Stored with every event recovery found in the provider's event log, and sent with it: where.
RECOVERED_HEADER = "sluice-recovered"
RECOVERED_FROM_SQUARE = "square-events-api"
# Sent with a redriven message: the id of the dead letter it came from.
REDRIVE_HEADER = "sluice-redrive-of"

ORIGIN_HEADERS = frozenset({SYNTHETIC_HEADER, RECOVERED_HEADER, REDRIVE_HEADER})

Origin = Literal["delivered", "recovered", "reconcile", "redrive"]


def origin_of(headers: Mapping[str, str]) -> Origin:
    if REDRIVE_HEADER in headers:
        return "redrive"
    if RECOVERED_HEADER in headers:
        return "recovered"
    if headers.get(SYNTHETIC_HEADER) == SYNTHETIC_MARK:
        return "reconcile"
    return "delivered"
