"""Tables, as SQLAlchemy 2 models. Alembic migrations create them; code reads them from here."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Computed,
    DateTime,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class InboundEvent(Base):
    """A provider delivery exactly as it arrived, kept for audit and replay.

    Partitioned by week of `received_at` (schemas/event_partitions.py); `id` is indexed in each
    partition, and dedupe is `EventKey`'s.
    """

    __tablename__ = "inbound_events"
    __table_args__ = {"postgresql_partition_by": "RANGE (received_at)"}  # noqa: RUF012 - SQLAlchemy's form

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    source: Mapped[str] = mapped_column(Text)
    provider_event_id: Mapped[str] = mapped_column(Text)
    event_type: Mapped[str] = mapped_column(Text)
    entity_type: Mapped[str | None] = mapped_column(Text)
    entity_id: Mapped[str | None] = mapped_column(Text)
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    body: Mapped[bytes] = mapped_column(LargeBinary)
    headers: Mapped[dict[str, str]] = mapped_column(JSONB)
    retry_number: Mapped[int | None] = mapped_column(Integer)
    retry_reason: Mapped[str | None] = mapped_column(Text)
    initial_delivery_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Which configured key verified the delivery: a fingerprint, never the key
    # (ingest/key_fingerprint.py); None for events that were not delivered.
    signature_key: Mapped[str | None] = mapped_column(Text)


class EventKey(Base):
    """The dedupe key of a stored event: at most one event per (source, provider event id).

    Written in the same statement as the event (ingest/record.py); kept the event retention plus
    the provider's redelivery horizon (ingest/partitions.py).
    """

    __tablename__ = "event_keys"
    __table_args__ = (Index("ix_event_keys_received_at", "received_at", postgresql_using="brin"),)

    source: Mapped[str] = mapped_column(Text, primary_key=True)
    provider_event_id: Mapped[str] = mapped_column(Text, primary_key=True)
    event_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class DeliveryRepeat(Base):
    """A later delivery of an event already stored: its headers, for the event's journey."""

    __tablename__ = "delivery_repeats"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    event_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), index=True)
    received_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    headers: Mapped[dict[str, str]] = mapped_column(JSONB)
    signature_key: Mapped[str | None] = mapped_column(Text)


class OutboxRow(Base):
    """A message waiting for the relay. Written in the same transaction as what it announces."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    topic: Mapped[str] = mapped_column(Text)
    key: Mapped[str] = mapped_column(Text)
    # json, not jsonb: written once, read once as text; kept exactly as encoded (migration 0007).
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    headers: Mapped[dict[str, str]] = mapped_column(JSON)
    event_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    # Which relay bucket the row's key belongs to; see outbox/leases.py. Computed by PostgreSQL.
    bucket: Mapped[int] = mapped_column(
        SmallInteger, Computed("hashtext(key) & 63", persisted=True)
    )


class OutboxLease(Base):
    """One key bucket of the outbox and the relay that may publish it until `lease_until`."""

    __tablename__ = "outbox_leases"

    bucket: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    owner: Mapped[str | None] = mapped_column(Text)
    token: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class OutboxRelay(Base):
    """A running relay, so relays can split the buckets fairly between those alive."""

    __tablename__ = "outbox_relays"

    owner: Mapped[str] = mapped_column(Text, primary_key=True)
    alive_until: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class AirtableWebhook(Base):
    """A webhook sluice fetches payloads for, and the cursor of the next payload to fetch."""

    __tablename__ = "airtable_webhooks"

    webhook_id: Mapped[str] = mapped_column(Text, primary_key=True)
    base_id: Mapped[str] = mapped_column(Text)
    # Advanced in the same transaction as the events fetched before it.
    cursor: Mapped[int] = mapped_column(BigInteger, server_default="1")
    notification_url: Mapped[str | None] = mapped_column(Text)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    refreshed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_fetched_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The last error payload Airtable listed for this webhook (INVALID_HOOK and the like).
    last_error_code: Mapped[str | None] = mapped_column(Text)
    last_error_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Tables the webhook's payloads reported deleted.
    destroyed_table_ids: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default="{}")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Lead(Base):
    """An Airtable lead. Which columns Airtable may write is declared in schemas/leads.py."""

    __tablename__ = "leads"

    record_id: Mapped[str] = mapped_column(Text, primary_key=True)
    base_id: Mapped[str] = mapped_column(Text)
    table_id: Mapped[str] = mapped_column(Text)
    full_name: Mapped[str | None] = mapped_column(Text)
    first_name: Mapped[str | None] = mapped_column(Text)
    last_name: Mapped[str | None] = mapped_column(Text)
    email: Mapped[str | None] = mapped_column(Text, index=True)
    phone: Mapped[str | None] = mapped_column(Text)
    company: Mapped[str | None] = mapped_column(Text)
    job_title: Mapped[str | None] = mapped_column(Text)
    city: Mapped[str | None] = mapped_column(Text)
    state: Mapped[str | None] = mapped_column(Text)
    lead_source: Mapped[str | None] = mapped_column(Text)
    campaign: Mapped[str | None] = mapped_column(Text)
    lead_status: Mapped[str | None] = mapped_column(Text)
    sms_sequence_position: Mapped[int | None] = mapped_column(Integer)
    sms_sent_count: Mapped[int | None] = mapped_column(Integer)
    last_sms_sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    opted_out: Mapped[bool | None] = mapped_column(Boolean)
    airtable_created_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    claimed_by: Mapped[str | None] = mapped_column(Text, index=True)
    claimed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    notes: Mapped[str | None] = mapped_column(Text)
    # The newest Airtable base transaction applied to the row: an older change never wins.
    airtable_txn: Mapped[int | None] = mapped_column(BigInteger)
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Job(Base):
    """A Square booking as staff work it. Who writes which column: schemas/projections.py."""

    __tablename__ = "jobs"

    booking_id: Mapped[str] = mapped_column(Text, primary_key=True)
    # Square writes these (see schemas/projections.py):
    status: Mapped[str | None] = mapped_column(Text)
    start_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), index=True)
    duration_minutes: Mapped[int | None] = mapped_column(Integer)
    service_variation_ids: Mapped[list[str] | None] = mapped_column(JSONB)
    team_member_id: Mapped[str | None] = mapped_column(Text)
    location_id: Mapped[str | None] = mapped_column(Text)
    customer_id: Mapped[str | None] = mapped_column(Text, index=True)
    customer_name: Mapped[str | None] = mapped_column(Text)
    customer_email: Mapped[str | None] = mapped_column(Text)
    customer_phone: Mapped[str | None] = mapped_column(Text)
    booking_version: Mapped[int | None] = mapped_column(BigInteger)
    source_updated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Staff write these; no consumer ever does:
    work_status: Mapped[str] = mapped_column(Text, server_default="scheduled")
    checklist: Mapped[list[Any]] = mapped_column(JSONB, server_default="[]")
    status_history: Mapped[list[Any]] = mapped_column(JSONB, server_default="[]")
    photos_meta: Mapped[list[Any]] = mapped_column(JSONB, server_default="[]")
    receipt_photos: Mapped[list[Any]] = mapped_column(JSONB, server_default="[]")
    post_completion_issue: Mapped[str | None] = mapped_column(Text)
    payment: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    vehicle_info: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    notes: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class SquareCustomer(Base):
    """Square's customers, as far as jobs need them: the source of the jobs' customer cache."""

    __tablename__ = "square_customers"

    customer_id: Mapped[str] = mapped_column(Text, primary_key=True)
    display_name: Mapped[str | None] = mapped_column(Text)
    email_address: Mapped[str | None] = mapped_column(Text)
    phone_number: Mapped[str | None] = mapped_column(Text)
    version: Mapped[int | None] = mapped_column(BigInteger)
    source_updated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    merged_into: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class ConsumerDedupe(Base):
    """Events a consumer has applied, written in the same transaction as their effect."""

    __tablename__ = "consumer_dedupe"
    # Appended in applied_at order: a block-range index finds old records for pruning cheaply.
    __table_args__ = (
        Index("ix_consumer_dedupe_applied_at", "applied_at", postgresql_using="brin"),
    )

    consumer: Mapped[str] = mapped_column(Text, primary_key=True)
    event_id: Mapped[str] = mapped_column(Text, primary_key=True)
    applied_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class DeadLetter(Base):
    """A message a consumer could never apply; also sent to the topic's `.dlq` topic."""

    __tablename__ = "dead_letters"
    __table_args__ = (UniqueConstraint("consumer", "topic", "partition", "offset"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    consumer: Mapped[str] = mapped_column(Text)
    topic: Mapped[str] = mapped_column(Text)
    partition: Mapped[int] = mapped_column(Integer)
    offset: Mapped[int] = mapped_column(BigInteger)
    key: Mapped[bytes | None] = mapped_column(LargeBinary)
    value: Mapped[bytes | None] = mapped_column(LargeBinary)
    headers: Mapped[dict[str, str]] = mapped_column(JSONB)
    event_id: Mapped[str | None] = mapped_column(Text)
    error_type: Mapped[str] = mapped_column(Text)
    error: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    # Set by `sluice dlq redrive` when the message was put back on its topic (via the outbox).
    redriven_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class IdempotencyKey(Base):
    """The first response to an App API call, replayed to any repeat with the same key."""

    __tablename__ = "idempotency_keys"

    key: Mapped[str] = mapped_column(Text, primary_key=True)
    request_hash: Mapped[str] = mapped_column(Text)  # method, path and body of the first call
    status_code: Mapped[int] = mapped_column(Integer)
    response: Mapped[dict[str, Any]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class ProjectionChange(Base):
    """A committed change to a projection row, for `GET /api/changes`. Written by triggers.

    `txid` is an xid8 (the writing transaction), read and compared as text by api/changes.py.
    """

    __tablename__ = "projection_changes"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    txid: Mapped[str] = mapped_column(Text)
    entity: Mapped[str] = mapped_column(Text)
    entity_id: Mapped[str] = mapped_column(Text)
    op: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any]] = mapped_column(JSONB)
    changed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class LeadSync(Base):
    """Write-back of a lead's app-owned fields to Airtable: pending, synced or failed."""

    __tablename__ = "lead_sync"

    record_id: Mapped[str] = mapped_column(Text, primary_key=True)
    status: Mapped[str] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    last_error: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    claimed_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    synced_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class LeadSyncField(Base):
    """Per app-owned field: when the app and when Airtable (not our own writes) last changed it."""

    __tablename__ = "lead_sync_fields"

    record_id: Mapped[str] = mapped_column(Text, primary_key=True)
    column_name: Mapped[str] = mapped_column(Text, primary_key=True)
    app_changed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    pushed_app_changed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    airtable_changed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    airtable_value: Mapped[Any] = mapped_column(JSONB)


class SyncConflict(Base):
    """An app value not pushed because Airtable changed the field more recently."""

    __tablename__ = "sync_conflicts"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    record_id: Mapped[str] = mapped_column(Text, index=True)
    column_name: Mapped[str] = mapped_column(Text)
    app_value: Mapped[Any] = mapped_column(JSONB)
    app_changed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    airtable_value: Mapped[Any] = mapped_column(JSONB)
    airtable_changed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    detected_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )


class SkippedCell(Base):
    """A source cell a consumer could not store (out of its column's range, unconvertible): the
    rest of the change was applied, this cell was not."""

    __tablename__ = "skipped_cells"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    projection: Mapped[str] = mapped_column(Text)
    row_key: Mapped[str] = mapped_column(Text, index=True)
    provider_event_id: Mapped[str] = mapped_column(Text)
    field_id: Mapped[str] = mapped_column(Text)
    column_name: Mapped[str] = mapped_column(Text)
    value_json: Mapped[str] = mapped_column(Text)  # as JSON text, cut at 1,000 characters
    reason: Mapped[str] = mapped_column(Text)
    skipped_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
