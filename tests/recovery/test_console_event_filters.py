"""The console's events list by provider event id: found through its dedupe key, since the
partitioned store has no index of its own on the provider's id."""

from __future__ import annotations

from typing import TYPE_CHECKING

from devkit.simulate import square_event
from recovery.console.events import EventFilter, list_events
from tests.support.recovery import store_events

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine


async def test_a_provider_event_id_lists_that_event_alone_in_its_source(
    engine: AsyncEngine,
) -> None:
    bodies = [square_event("booking.created", event_id=f"ev-filter-{n}") for n in range(3)]
    ids = await store_events(engine, bodies)

    for source in (None, "square"):
        rows, more = await list_events(
            engine, EventFilter(source=source, provider_event_id="ev-filter-1")
        )
        assert [(r.id, r.provider_event_id) for r in rows] == [(str(ids[1]), "ev-filter-1")]
        assert not more
    rows, _ = await list_events(
        engine, EventFilter(source="airtable", provider_event_id="ev-filter-1")
    )
    assert rows == []
    rows, _ = await list_events(engine, EventFilter(provider_event_id="ev-never-stored"))
    assert rows == []
