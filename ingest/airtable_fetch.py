"""Fetching an Airtable webhook's payloads: one event per record change, cursor in the same commit.

Each page is one transaction: take the webhook's advisory lock (one fetcher per webhook at a
time), read the stored cursor, fetch the page from that cursor, record one event per record
change (event row + outbox row on `airtable.records`), and move the cursor past the page. A
fetcher killed at any instant either committed the page and its cursor together or neither;
the next fetch resumes at the stored cursor. Event ids are derived from the webhook, the
payload's cursor number, the table, the record and the action, so a page fetched twice is
stored once.

A payload's `destroyedTableIds` become `airtable.table.destroyed` events (the leads projection
marks the table's rows deleted). An error payload (`{"error": true, "code": "INVALID_HOOK"}`
and the like, listed when the webhook breaks at Airtable) carries no changes: it is logged and
recorded on the webhook's row in the page's transaction, and reported to the caller to count.

A 429 ends the page's transaction first; the wait (30 s by default) happens outside it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import text

from ingest.record import NewEvent, record_events
from outbox.enqueue import OutboxMessage
from providers.airtable import AirtableRateLimitedError
from schemas.airtable import SOURCE, RecordChange, TableDestroyed
from schemas.envelope import EventHead, encode_with_raw_data
from schemas.topics import Topic
from sluice.db import transaction
from sluice.errors import InvalidInputError
from sluice.ids import new_event_id

if TYPE_CHECKING:
    import uuid
    from collections.abc import Mapping

    from pyairtable.models.webhook import WebhookPayload, WebhookPayloads
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

    from providers.airtable import AirtableClient
    from schemas.airtable import RecordAction

log = structlog.get_logger(__name__)

# First half of the two-int advisory lock key; outbox key locks use 0x51CE.
FETCH_LOCK_NAMESPACE = 0x51CF
PAGE_SIZE = 50


class UnknownWebhookError(InvalidInputError):
    """No `airtable_webhooks` row for this webhook: nothing to fetch, do not retry."""


@dataclass(frozen=True, slots=True)
class PageResult:
    base_id: str
    cursor_before: int
    cursor_after: int
    payloads: int
    changes: int
    recorded: int  # changes not stored before
    might_have_more: bool
    error_codes: tuple[str, ...] = ()  # of the page's error payloads
    destroyed_tables: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class FetchResult:
    webhook_id: str
    pages: int
    payloads: int
    changes: int
    recorded: int
    cursor: int
    more: bool  # stopped at max_pages with payloads left
    error_codes: tuple[str, ...] = ()
    destroyed_tables: tuple[str, ...] = ()


_LOCK = text("SELECT pg_advisory_xact_lock(:namespace, hashtext(:webhook_id))")
_READ = text("SELECT base_id, cursor FROM airtable_webhooks WHERE webhook_id = :webhook_id")
_ADVANCE = text(
    """
    UPDATE airtable_webhooks
    SET cursor = GREATEST(cursor, :cursor), last_fetched_at = now(), updated_at = now()
    WHERE webhook_id = :webhook_id
    """
)
_PROBLEMS = text(
    """
    UPDATE airtable_webhooks SET
        last_error_code = COALESCE(:code, last_error_code),
        last_error_at = CASE WHEN :code IS NULL THEN last_error_at ELSE :at END,
        destroyed_table_ids = ARRAY(
            SELECT DISTINCT unnest(destroyed_table_ids || CAST(:tables AS text[])) ORDER BY 1
        )
    WHERE webhook_id = :webhook_id
    """
)
_REGISTER = text(
    """
    INSERT INTO airtable_webhooks (webhook_id, base_id, notification_url, expires_at)
    VALUES (:webhook_id, :base_id, :notification_url, :expires_at)
    ON CONFLICT (webhook_id) DO UPDATE SET
        notification_url = COALESCE(EXCLUDED.notification_url, airtable_webhooks.notification_url),
        expires_at = COALESCE(EXCLUDED.expires_at, airtable_webhooks.expires_at),
        updated_at = now()
    WHERE airtable_webhooks.base_id = EXCLUDED.base_id
    """
)


async def register_webhook(
    conn: AsyncConnection,
    webhook_id: str,
    base_id: str,
    *,
    notification_url: str | None = None,
    expires_at: datetime | None = None,
) -> None:
    """Make sure sluice knows the webhook; a new one starts at cursor 1 (its first payload)."""
    await conn.execute(
        _REGISTER,
        {
            "webhook_id": webhook_id,
            "base_id": base_id,
            "notification_url": notification_url,
            "expires_at": expires_at,
        },
    )


async def fetch_page(engine: AsyncEngine, client: AirtableClient, webhook_id: str) -> PageResult:
    """Fetch the page at the stored cursor, record its changes, advance the cursor: atomically."""
    async with transaction(engine) as conn:
        await conn.execute(_LOCK, {"namespace": FETCH_LOCK_NAMESPACE, "webhook_id": webhook_id})
        row = (await conn.execute(_READ, {"webhook_id": webhook_id})).one_or_none()
        if row is None:
            raise UnknownWebhookError(webhook_id)
        base_id, cursor = str(row.base_id), int(row.cursor)
        page = await asyncio.to_thread(
            client.payload_page, base_id, webhook_id, cursor, limit=PAGE_SIZE
        )
        changes = page_changes(webhook_id, base_id, cursor, page)
        recorded = await record_events(conn, [change_event(c) for c in changes])
        errors = [(cursor + i, p) for i, p in enumerate(page.payloads) if p.error]
        destroyed = [c.table_id for c in changes if isinstance(c, TableDestroyed)]
        if errors or destroyed:
            await _record_problems(conn, webhook_id, base_id, errors, destroyed)
        # Airtable's answer says where the next page starts; never before the stored cursor.
        next_cursor = max(cursor, page.cursor if page.payloads else cursor)
        await conn.execute(_ADVANCE, {"webhook_id": webhook_id, "cursor": next_cursor})
    return PageResult(
        base_id=base_id,
        cursor_before=cursor,
        cursor_after=next_cursor,
        payloads=len(page.payloads),
        changes=len(changes),
        recorded=sum(not r.duplicate for r in recorded),
        might_have_more=page.might_have_more and bool(page.payloads),
        error_codes=tuple(_error_code(p) for _, p in errors),
        destroyed_tables=tuple(destroyed),
    )


def _error_code(payload: WebhookPayload) -> str:
    return payload.error_code or "UNKNOWN"


async def _record_problems(
    conn: AsyncConnection,
    webhook_id: str,
    base_id: str,
    errors: list[tuple[int, WebhookPayload]],
    destroyed: list[str],
) -> None:
    """What the page reported that no record change says: onto the webhook's row, and the log."""
    for number, payload in errors:
        # Airtable lists an error payload when it cannot serve the webhook any more (its
        # specification became invalid, say): the changes since are not coming. Recreate it,
        # then `sluice reconcile airtable --full` finds what was missed.
        log.error(
            "airtable.payload_error",
            webhook_id=webhook_id,
            base_id=base_id,
            code=_error_code(payload),
            payload_cursor=number,
        )
    for table_id in destroyed:
        log.warning("airtable.table_destroyed", webhook_id=webhook_id, table_id=table_id)
    last = errors[-1][1] if errors else None
    await conn.execute(
        _PROBLEMS,
        {
            "webhook_id": webhook_id,
            "code": _error_code(last) if last is not None else None,
            "at": last.timestamp if last is not None else None,
            "tables": destroyed,
        },
    )


async def fetch_webhook(
    engine: AsyncEngine, client: AirtableClient, webhook_id: str, *, max_pages: int = 1000
) -> FetchResult:
    """Fetch pages until Airtable says there are no more (or `max_pages`, to share the worker)."""
    pages = payloads = changes = recorded = 0
    cursor = 0
    more = False
    error_codes: list[str] = []
    destroyed: list[str] = []
    with structlog.contextvars.bound_contextvars(source=SOURCE, webhook_id=webhook_id):
        while pages < max_pages:
            try:
                page = await fetch_page(engine, client, webhook_id)
            except AirtableRateLimitedError as exc:
                log.warning("airtable.rate_limited", wait_seconds=exc.wait_seconds)
                await asyncio.sleep(exc.wait_seconds)
                continue
            pages += 1
            payloads += page.payloads
            changes += page.changes
            recorded += page.recorded
            cursor = page.cursor_after
            more = page.might_have_more
            error_codes += page.error_codes
            destroyed += page.destroyed_tables
            if not more:
                break
        log.info(
            "airtable.fetched", pages=pages, payloads=payloads, recorded=recorded, cursor=cursor
        )
    return FetchResult(
        webhook_id,
        pages,
        payloads,
        changes,
        recorded,
        cursor,
        more,
        tuple(error_codes),
        tuple(destroyed),
    )


def page_changes(
    webhook_id: str, base_id: str, cursor: int, page: WebhookPayloads
) -> list[RecordChange | TableDestroyed]:
    """Every change in the page, in payload order (payload i has cursor number cursor+i)."""
    changes: list[RecordChange | TableDestroyed] = []
    for index, payload in enumerate(page.payloads):
        changes.extend(payload_changes(webhook_id, base_id, cursor + index, payload))
    return changes


def payload_changes(
    webhook_id: str, base_id: str, number: int, payload: WebhookPayload
) -> list[RecordChange | TableDestroyed]:
    metadata = payload.action_metadata
    user = metadata.source_metadata.get("user") if metadata else None

    def change(  # noqa: PLR0913 - a RecordChange has that many parts
        table_id: str,
        record_id: str,
        action: RecordAction,
        *,
        cells: dict[str, Any] | None = None,
        previous: dict[str, Any] | None = None,
        created_time: datetime | None = None,
    ) -> RecordChange:
        return RecordChange(
            base_id=base_id,
            table_id=table_id,
            record_id=record_id,
            action=action,
            webhook_id=webhook_id,
            payload_cursor=number,
            base_transaction_number=payload.base_transaction_number,
            timestamp=payload.timestamp,
            change_source=metadata.source if metadata else None,
            change_user_id=user.get("id") if isinstance(user, dict) else None,
            created_time=created_time,
            cells=cells or {},
            previous_cells=previous,
        )

    changes: list[RecordChange | TableDestroyed] = []
    for table_id, table in payload.changed_tables_by_id.items():
        for record_id, created in table.created_records_by_id.items():
            cells = created.cell_values_by_field_id
            changes.append(
                change(
                    table_id, record_id, "created", cells=cells, created_time=created.created_time
                )
            )
        for record_id, changed in table.changed_records_by_id.items():
            previous = changed.previous.cell_values_by_field_id if changed.previous else None
            cells = changed.current.cell_values_by_field_id
            changes.append(change(table_id, record_id, "changed", cells=cells, previous=previous))
        changes.extend(change(table_id, rid, "destroyed") for rid in table.destroyed_record_ids)
    for table_id, new_table in payload.created_tables_by_id.items():
        for record_id, created in new_table.records_by_id.items():
            cells = created.cell_values_by_field_id
            changes.append(
                change(
                    table_id, record_id, "created", cells=cells, created_time=created.created_time
                )
            )
    changes.extend(
        TableDestroyed(
            kind="table_destroyed",
            base_id=base_id,
            table_id=table_id,
            webhook_id=webhook_id,
            payload_cursor=number,
            base_transaction_number=payload.base_transaction_number,
            timestamp=payload.timestamp,
        )
        for table_id in payload.destroyed_table_ids
    )
    return changes


def change_event(
    change: RecordChange | TableDestroyed, *, headers: Mapping[str, str] | None = None
) -> NewEvent:
    """The event row and outbox message of a change; `headers` are kept with the event and go on
    the Kafka message too (the reconciler marks its snapshots this way)."""
    received_at = datetime.now(UTC)
    event_id = new_event_id()
    data_json = change.model_dump_json()
    message = record_change_message(change, data_json, event_id, received_at)
    message.headers.update(headers or {})
    return NewEvent(
        id=event_id,
        source=SOURCE,
        provider_event_id=change.provider_event_id,
        event_type=change.event_type,
        entity_type=change.entity_type,
        entity_id=change.key,
        occurred_at=change.timestamp,
        received_at=received_at,
        body=data_json.encode(),
        headers=dict(headers or {}),
        retry_number=None,
        retry_reason=None,
        initial_delivery_at=None,
        message=message,
    )


def record_change_message(
    change: RecordChange | TableDestroyed,
    data_json: str,
    event_id: uuid.UUID,
    received_at: datetime,
) -> OutboxMessage:
    """The `airtable.records` message of a stored change; `sluice replay store` rebuilds it from
    the stored body with the same event id, so consumers drop a repeat."""
    cloud_event = EventHead(
        id=str(event_id),
        source=SOURCE,
        type=change.event_type,
        subject=change.key,
        time=change.timestamp,
        providereventid=change.provider_event_id,
        receivedat=received_at,
        entitytype=change.entity_type,
    )
    return OutboxMessage(
        topic=Topic.AIRTABLE_RECORDS,
        key=change.key,
        payload_json=encode_with_raw_data(cloud_event, data_json),
        headers=cloud_event.kafka_headers(),
        event_id=event_id,
    )
