"""What each consumer did with each event, written in the transaction that did it.

Per consumer group and message: `applied`, `stale` (the row already held that version or a newer
one: both versions are kept), `duplicate` (its event id was applied before), `ignored` (not for
this projection) or `dead_lettered` (with the error), with where the message came from
(delivered, reconcile, redrive: schemas/origins.py), its topic, partition and offset, the entity
it is about (the message key), when the relay published it (the record's timestamp) and when
sluice received the event (its `ce_receivedat` header, which names the event's partition of the
store). These are the second half of an event's journey; the first is its inbound_events row
(recovery/journey.py reads both).

An applied or stale event's outcome lives in its dedupe record (consumers/dedupe.py), which the
consumer writes anyway: the common case costs no row of its own. The rarer outcomes get an
`event_outcomes` row each, written with COPY.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from consumers.dedupe import nul_free
from sluice.db import driver_connection
from sluice.jsontext import json_text

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sqlalchemy.ext.asyncio import AsyncConnection

    from consumers.message import ConsumedMessage

OutcomeKind = Literal["applied", "stale", "duplicate", "ignored", "dead_lettered"]
# Kept in the dedupe record, not in event_outcomes.
_CLAIMED: frozenset[OutcomeKind] = frozenset({"applied", "stale"})

_COPY = (
    'COPY event_outcomes (event_id, consumer, outcome, origin, topic, partition, "offset",'
    " entity_key, published_at, received_at, detail) FROM STDIN"
)


@dataclass(frozen=True, slots=True)
class Outcome:
    message: ConsumedMessage
    event_id: str | None
    kind: OutcomeKind
    detail: dict[str, Any] | None = None


async def record_outcomes(
    conn: AsyncConnection, consumer: str, outcomes: Sequence[Outcome]
) -> None:
    """Write the outcomes that no dedupe record holds (duplicate, ignored, dead-lettered)."""
    rest = [o for o in outcomes if o.kind not in _CLAIMED]
    if not rest:
        return
    driver = await driver_connection(conn)
    async with driver.cursor().copy(_COPY) as copy:
        for o in rest:
            m = o.message
            await copy.write_row(
                (
                    None if o.event_id is None else nul_free(o.event_id),
                    consumer,
                    o.kind,
                    m.origin,
                    m.topic,
                    m.partition,
                    m.offset,
                    None if m.key is None else nul_free(m.key.decode("utf-8", "replace")),
                    m.published_at,
                    m.received_at,
                    None if o.detail is None else nul_free(json_text(o.detail)),
                )
            )
