"""The leads projection: `airtable.records` changes into `leads` (and any other mapped table).

Mappings are declared in schemas/leads.py, ownership in the same place; the writing itself is in
consumers/airtable_projection.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import ValidationError

from consumers.airtable_projection import MappingResolver, apply_record_changes
from consumers.errors import InvalidMessageError
from consumers.message import Applied, Decoded
from schemas.airtable import RecordEvent
from schemas.envelope import CloudEvent
from schemas.leads import AIRTABLE_MAPPINGS
from schemas.topics import CONSUMER_TOPICS

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sqlalchemy.ext.asyncio import AsyncConnection

    from consumers.message import ConsumedMessage
    from providers.airtable import AirtableClient
    from schemas.airtable import RecordChange, TableDestroyed
    from schemas.airtable_mapping import TableMapping


class LeadsProjection:
    def __init__(
        self,
        client: AirtableClient,
        topics: Sequence[str] = CONSUMER_TOPICS["leads"],
        mappings: Sequence[TableMapping] = AIRTABLE_MAPPINGS,
        own_user_ids: Sequence[str] = (),
    ) -> None:
        self._resolver = MappingResolver(client, mappings)
        self._topics = tuple(topics)
        # Our Airtable user(s): their API changes are the write-back's echo (AIRTABLE_USER_ID).
        self._own_user_ids = frozenset(own_user_ids)

    @property
    def name(self) -> str:
        return "leads"

    @property
    def topics(self) -> tuple[str, ...]:
        return self._topics

    def decode(self, message: ConsumedMessage) -> Decoded[RecordChange | TableDestroyed] | None:
        if message.value is None:
            raise InvalidMessageError("message has no value")
        try:
            event = CloudEvent[RecordEvent].model_validate_json(message.value)
        except ValidationError as exc:
            raise InvalidMessageError(f"not an Airtable record event: {exc}") from exc
        return Decoded(event.id, event.data)

    async def apply(
        self, conn: AsyncConnection, items: Sequence[RecordChange | TableDestroyed]
    ) -> Applied:
        # The schema lookup (once per base) may find Airtable unavailable: a TransientError, so
        # the batch is retried.
        return await apply_record_changes(conn, self._resolver, items, self._own_user_ids)
