"""Airtable's shapes: the notification ping, and the record change sluice derives from payloads.

Airtable's webhook carries no data, only "something changed in this base"; the changes are
fetched from the webhook's payload list. Each record change in a payload becomes one
`RecordChange`, the `data` of an `airtable.records` event.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

SOURCE = "airtable"

RecordAction = Literal["created", "changed", "destroyed"]


class _NestedId(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    id: str = Field(min_length=1, max_length=200)


class AirtablePing(BaseModel):
    """The body Airtable POSTs to the notification URL."""

    model_config = ConfigDict(extra="allow", frozen=True)

    base: _NestedId
    webhook: _NestedId
    timestamp: AwareDatetime

    @property
    def provider_event_id(self) -> str:
        # Pings carry no id of their own; a repeat of the same ping has the same timestamp.
        return f"{self.webhook.id}:{self.timestamp.isoformat()}"


class RecordChange(BaseModel):
    """One record created, changed or destroyed in one Airtable transaction."""

    model_config = ConfigDict(frozen=True)

    base_id: str
    table_id: str
    record_id: str
    action: RecordAction
    webhook_id: str
    # Position of the payload in the webhook's payload list: with the ids above, unique.
    payload_cursor: int
    # Airtable's per-base transaction counter: orders changes to one record.
    base_transaction_number: int
    timestamp: AwareDatetime
    # actionMetadata.source: `publicApi` is a change made through the API (perhaps by us).
    change_source: str | None = None
    change_user_id: str | None = None
    created_time: AwareDatetime | None = None
    # Created: every cell. Changed: only the cells that changed. Destroyed: none.
    cells: dict[str, Any] = Field(default_factory=dict)
    previous_cells: dict[str, Any] | None = None

    @property
    def key(self) -> str:
        return f"{self.base_id}/{self.table_id}/{self.record_id}"

    @property
    def provider_event_id(self) -> str:
        # Deterministic: fetching the same payload again yields the same ids, stored once.
        return ":".join(
            (self.webhook_id, str(self.payload_cursor), self.table_id, self.record_id, self.action)
        )

    @property
    def event_type(self) -> str:
        return f"airtable.record.{self.action}"
