"""The Airtable payload fetcher, as a consumer of `airtable.pings`.

A ping only says "webhook W has new payloads". For each webhook pinged in a batch (coalesced:
one fetch however many pings), the fetcher registers the webhook if new, then fetches pages
from the stored cursor (see ingest/airtable_fetch.py: each page, its events and the cursor are
one transaction of their own). A fetch that stops at `max_pages` leaves a continuation ping in
the outbox, in the batch's transaction, so a long backlog never holds up the consumer group and
is never forgotten either. Error payloads and destroyed tables the pages reported are counted
for the fetcher's metrics (and recorded on the webhook's row by the fetch itself).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from pydantic import ValidationError

from consumers.errors import InvalidMessageError
from consumers.message import Applied, Decoded
from ingest.airtable_fetch import UnknownWebhookError, fetch_webhook, register_webhook
from outbox.enqueue import OutboxMessage, enqueue
from schemas.airtable import SOURCE, AirtablePing
from schemas.envelope import CloudEvent
from schemas.topics import CONSUMER_TOPICS, Topic
from sluice.db import transaction
from sluice.ids import new_event_id
from sluice.tracing import TRACEPARENT, continuing

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sqlalchemy.ext.asyncio import AsyncConnection

    from consumers.message import ConsumedMessage, Tally
    from providers.airtable import AirtableClient

MAX_PAGES_PER_PING = 100  # 20 s at 5 requests/s


@dataclass(frozen=True, slots=True)
class Ping:
    webhook_id: str
    base_id: str
    traceparent: str | None = None  # the ping's trace, which its fetch continues


class AirtableFetcher:
    def __init__(
        self,
        client: AirtableClient,
        topics: Sequence[str] = CONSUMER_TOPICS["airtable-fetcher"],
        *,
        max_pages: int = MAX_PAGES_PER_PING,
    ) -> None:
        self._client = client
        self._topics = tuple(topics)
        self._max_pages = max_pages

    @property
    def name(self) -> str:
        return "airtable-fetcher"

    @property
    def topics(self) -> tuple[str, ...]:
        return self._topics

    def decode(self, message: ConsumedMessage) -> Decoded[Ping] | None:
        if message.value is None:
            raise InvalidMessageError("message has no value")
        try:
            event = CloudEvent[AirtablePing].model_validate_json(message.value)
        except ValidationError as exc:
            raise InvalidMessageError(f"not an Airtable ping event: {exc}") from exc
        ping = event.data
        return Decoded(event.id, Ping(ping.webhook.id, ping.base.id, message.header(TRACEPARENT)))

    async def apply(self, conn: AsyncConnection, items: Sequence[Ping]) -> Applied:
        engine = conn.engine
        tally: Tally = Counter()
        for ping in {p.webhook_id: p for p in items}.values():
            async with transaction(engine) as own:
                await register_webhook(own, ping.webhook_id, ping.base_id)
            # Airtable unavailable is a TransientError: the batch is retried after a pause.
            try:
                # The records events it writes carry the ping's trace (sluice/tracing.py).
                with continuing(ping.traceparent):
                    result = await fetch_webhook(
                        engine, self._client, ping.webhook_id, max_pages=self._max_pages
                    )
            except UnknownWebhookError as exc:
                raise InvalidMessageError(f"webhook {exc} is not registered") from exc
            tally.update(("sluice_airtable_payload_errors", (code,)) for code in result.error_codes)
            tally[("sluice_airtable_tables_destroyed", ())] += len(result.destroyed_tables)
            if result.more:
                await enqueue(conn, [continuation(ping)])
        return Applied(tally)


def continuation(ping: Ping) -> OutboxMessage:
    """A ping of our own: fetch the rest of this webhook's backlog."""
    now = datetime.now(UTC)
    event_id = new_event_id()
    body = AirtablePing.model_validate(
        {"base": {"id": ping.base_id}, "webhook": {"id": ping.webhook_id}, "timestamp": now}
    )
    event = CloudEvent[AirtablePing](
        id=str(event_id),
        source=SOURCE,
        type="airtable.ping",
        subject=ping.webhook_id,
        time=now,
        data=body,
        providereventid=f"continuation:{event_id}",
        receivedat=now,
        entitytype="webhook",
    )
    return OutboxMessage(
        topic=Topic.AIRTABLE_PINGS,
        key=ping.webhook_id,
        payload_json=event.model_dump_json(),
        headers=event.kafka_headers(),
        event_id=event_id,
    )
