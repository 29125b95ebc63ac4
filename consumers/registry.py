"""The projections `sluice consume <name>` can run."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from consumers.jobs import JobsProjection

if TYPE_CHECKING:
    from collections.abc import Sequence

    from prometheus_client import CollectorRegistry

    from consumers.message import Projection
    from sluice.resilience import StateHook
    from sluice.settings import Settings
    from sluice.tracing import Tracing

CONSUMERS = ("jobs", "airtable-fetcher", "leads", "airtable-writeback")


def build_projection(  # noqa: PLR0913 - what a consumer is built from, by keyword after topics
    name: str,
    topics: Sequence[str] = (),
    settings: Settings | None = None,
    *,
    breakers: StateHook | None = None,
    registry: CollectorRegistry | None = None,
    tracing: Tracing | None = None,
) -> Projection[Any]:
    """The projection called `name`, on its default topics unless `topics` are given.
    `breakers` hears the state changes of the circuit breaker a projection calls through."""
    if name == "jobs":
        return JobsProjection(topics) if topics else JobsProjection()
    if name in ("airtable-fetcher", "leads"):
        from consumers.airtable_fetcher import AirtableFetcher  # noqa: PLC0415 - needs pyairtable
        from consumers.leads import LeadsProjection  # noqa: PLC0415
        from providers.airtable import AirtableClient  # noqa: PLC0415

        if settings is None:
            raise ValueError(f"consumer {name!r} needs settings (AIRTABLE_API_KEY)")
        client = AirtableClient.from_settings(settings)
        if name == "leads":
            own = settings.airtable_user_ids
            if topics:
                return LeadsProjection(client, topics, own_user_ids=own)
            return LeadsProjection(client, own_user_ids=own)
        return AirtableFetcher(client, topics) if topics else AirtableFetcher(client)
    if name == "airtable-writeback":
        from consumers.airtable_writeback import AirtableWriteback  # noqa: PLC0415

        if settings is None:
            raise ValueError(f"consumer {name!r} needs settings (AIRTABLE_API_KEY)")
        return AirtableWriteback.from_settings(
            settings, topics, on_breaker_change=breakers, registry=registry, tracing=tracing
        )
    raise ValueError(f"unknown consumer {name!r}; choose one of {', '.join(CONSUMERS)}")
