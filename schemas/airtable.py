"""Airtable's shapes: the notification ping, and the events sluice derives from payloads.

Airtable's webhook carries no data, only "something changed in this base"; the changes are
fetched from the webhook's payload list. Each record change in a payload becomes one
`RecordChange`, and each table the payload lists in `destroyedTableIds` one `TableDestroyed`:
together the `data` of `airtable.records` events (`RecordEvent`). The reconciler's table sweep
(recovery/airtable_sweep.py) writes record changes too: snapshots of what it listed.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    model_validator,
)

SOURCE = "airtable"
# Airtable keeps a webhook's payloads for 7 days: a fetch can bring a change back that long.
REDELIVERY_HORIZON = timedelta(days=7)

RecordAction = Literal["created", "changed", "destroyed"]
# Airtable's transaction numbers, stored as PostgreSQL bigint.
TransactionNumber = Annotated[int, Field(ge=0, le=2**63 - 1)]


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
    """One record created, changed or destroyed in one Airtable transaction, or a sweep's
    snapshot of one record."""

    model_config = ConfigDict(frozen=True)

    base_id: str
    table_id: str
    record_id: str
    action: RecordAction
    # The webhook whose payload carried the change; None on a sweep's snapshot.
    webhook_id: str | None = None
    # Position of the payload in the webhook's payload list: with the ids above, unique.
    payload_cursor: int | None = None
    # Airtable's per-base transaction counter: orders changes to one record. On a snapshot, the
    # row version the sweep saw (0: no row yet); the snapshot applies only while the row is
    # still at it. Several payloads may share one number: they are parts of one action.
    base_transaction_number: TransactionNumber
    timestamp: AwareDatetime
    # actionMetadata.source: `publicApi` is a change made through the API (perhaps by us).
    change_source: str | None = None
    change_user_id: str | None = None
    created_time: AwareDatetime | None = None
    # Created: every cell. Changed: only the cells that changed. Destroyed: none.
    cells: dict[str, Any] = Field(default_factory=dict)
    previous_cells: dict[str, Any] | None = None
    # Set on a reconcile sweep's snapshot instead of the webhook fields: what tells the
    # snapshots of one record apart (the row version and state it was compared with, and a
    # digest of the cells); a snapshot carries every mapped source cell, empty ones as null.
    sweep: str | None = Field(default=None, max_length=200)

    @model_validator(mode="after")
    def _one_origin(self) -> Self:
        from_webhook = self.webhook_id is not None and self.payload_cursor is not None
        if from_webhook == (self.sweep is not None):
            raise ValueError("a record change comes from a webhook payload or from a sweep")
        return self

    @property
    def key(self) -> str:
        return f"{self.base_id}/{self.table_id}/{self.record_id}"

    @property
    def provider_event_id(self) -> str:
        # Deterministic: fetching the same payload again (or sweeping the same record in the
        # same state) yields the same ids, stored once.
        origin = (
            f"sweep:{self.sweep}"
            if self.sweep is not None
            else f"{self.webhook_id}:{self.payload_cursor}"
        )
        return f"{origin}:{self.table_id}:{self.record_id}:{self.action}"

    @property
    def event_type(self) -> str:
        return f"airtable.record.{self.action}"

    @property
    def entity_type(self) -> str:
        return "record"


class TableDestroyed(BaseModel):
    """A table deleted in one Airtable action (listed in a payload's `destroyedTableIds`)."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["table_destroyed"]
    base_id: str
    table_id: str
    webhook_id: str
    payload_cursor: int
    base_transaction_number: TransactionNumber
    timestamp: AwareDatetime

    @property
    def key(self) -> str:
        return f"{self.base_id}/{self.table_id}"

    @property
    def provider_event_id(self) -> str:
        return f"{self.webhook_id}:{self.payload_cursor}:{self.table_id}:table_destroyed"

    @property
    def event_type(self) -> str:
        return "airtable.table.destroyed"

    @property
    def entity_type(self) -> str:
        return "table"


def _record_event_kind(value: Any) -> str:  # noqa: ANN401 - a dict or a model
    kind = value.get("kind") if isinstance(value, dict) else getattr(value, "kind", None)
    return "table" if kind == "table_destroyed" else "record"


# The `data` of an `airtable.records` event.
RecordEvent = Annotated[
    Annotated[RecordChange, Tag("record")] | Annotated[TableDestroyed, Tag("table")],
    Discriminator(_record_event_kind),
]
RECORD_EVENT: TypeAdapter[RecordChange | TableDestroyed] = TypeAdapter(RecordEvent)
