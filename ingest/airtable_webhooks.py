"""Airtable webhook lifecycle: create, list, refresh, delete, and the registry sluice fetches by.

Webhooks made with a personal access token expire seven days after creation or their last
refresh; `refresh_all` (run on a schedule, `sluice airtable webhooks refresh --all`) extends each
registered one, so none reaches its expiry. The MAC secret exists only in the answer to create:
it is handed to the operator, never stored here.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import text

from ingest.airtable_fetch import register_webhook
from providers.airtable import AirtableError, AirtableRequestError
from sluice.db import transaction

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from providers.airtable import AirtableClient

log = structlog.get_logger(__name__)


def webhook_specification(table_id: str | None = None) -> dict[str, Any]:
    """Record changes (all tables, or one); sluice reads changed cells, not previous values."""
    filters: dict[str, Any] = {"dataTypes": ["tableData"]}
    if table_id:
        filters["recordChangeScope"] = table_id
    return {"options": {"filters": filters}}


@dataclass(frozen=True, slots=True)
class CreatedWebhook:
    webhook_id: str
    base_id: str
    mac_secret_base64: str
    expires_at: datetime | None


@dataclass(frozen=True, slots=True)
class Registered:
    """A webhook sluice fetches for, and what its payloads reported beyond record changes."""

    webhook_id: str
    base_id: str
    cursor: int
    last_error_code: str | None = None
    last_error_at: datetime | None = None
    destroyed_table_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class WebhookStatus:
    webhook_id: str
    base_id: str
    registered: Registered | None  # None if sluice does not fetch for it
    next_payload: int | None  # Airtable's; None if Airtable does not know it
    expires_at: datetime | None
    notification_url: str | None
    enabled: bool | None = None  # Airtable's isHookEnabled
    notifications_enabled: bool | None = None

    @property
    def cursor(self) -> int | None:
        """sluice's next payload; None if not registered here."""
        return self.registered.cursor if self.registered is not None else None


@dataclass(frozen=True, slots=True)
class RefreshOutcome:
    webhook_id: str
    expires_at: datetime | None
    error: str | None = None


async def create_webhook(
    engine: AsyncEngine,
    client: AirtableClient,
    base_id: str,
    notification_url: str,
    *,
    table_id: str | None = None,
) -> CreatedWebhook:
    answer = await asyncio.to_thread(
        client.create_webhook, base_id, notification_url, webhook_specification(table_id)
    )
    async with transaction(engine) as conn:
        await register_webhook(
            conn,
            answer.id,
            base_id,
            notification_url=notification_url,
            expires_at=answer.expiration_time,
        )
    log.info("airtable.webhook_created", webhook_id=answer.id, base_id=base_id)
    return CreatedWebhook(answer.id, base_id, answer.mac_secret_base64, answer.expiration_time)


async def registered(engine: AsyncEngine) -> list[Registered]:
    """Every webhook sluice fetches for."""
    async with transaction(engine) as conn:
        rows = await conn.execute(
            text(
                "SELECT webhook_id, base_id, cursor, last_error_code, last_error_at, "
                "destroyed_table_ids FROM airtable_webhooks ORDER BY webhook_id"
            )
        )
        return [
            Registered(
                r.webhook_id,
                r.base_id,
                r.cursor,
                r.last_error_code,
                r.last_error_at,
                tuple(r.destroyed_table_ids),
            )
            for r in rows
        ]


async def nearest_expiry(engine: AsyncEngine) -> float | None:
    """Unix time of the first registered webhook to expire (for the expiry metric)."""
    async with transaction(engine) as conn:
        value = (
            await conn.execute(
                text("SELECT extract(epoch FROM min(expires_at)) FROM airtable_webhooks")
            )
        ).scalar_one_or_none()
    return None if value is None else float(value)


async def list_webhooks(
    engine: AsyncEngine, client: AirtableClient, base_ids: list[str] | None = None
) -> list[WebhookStatus]:
    """Airtable's webhooks of the given (or every registered) base, joined with sluice's cursors
    and what their payloads reported."""
    ours = {r.webhook_id: r for r in await registered(engine)}
    bases = base_ids or sorted({r.base_id for r in ours.values()})
    statuses = []
    seen = set()
    for base_id in bases:
        for hook in await asyncio.to_thread(client.webhooks, base_id):
            seen.add(hook.id)
            statuses.append(
                WebhookStatus(
                    hook.id,
                    base_id,
                    ours.get(hook.id),
                    hook.cursor_for_next_payload,
                    hook.expiration_time,
                    hook.notification_url,
                    hook.is_hook_enabled,
                    hook.are_notifications_enabled,
                )
            )
    statuses.extend(
        WebhookStatus(r.webhook_id, r.base_id, r, None, None, None)
        for r in ours.values()
        if r.webhook_id not in seen and r.base_id in bases
    )
    return statuses


async def refresh_webhook(
    engine: AsyncEngine, client: AirtableClient, webhook_id: str
) -> RefreshOutcome:
    async with transaction(engine) as conn:
        base_id = (
            await conn.execute(
                text("SELECT base_id FROM airtable_webhooks WHERE webhook_id = :w"),
                {"w": webhook_id},
            )
        ).scalar_one_or_none()
    if base_id is None:
        return RefreshOutcome(webhook_id, None, "not registered in sluice")
    try:
        expiration = await asyncio.to_thread(client.refresh_webhook, base_id, webhook_id)
    except AirtableError as exc:
        log.warning("airtable.webhook_refresh_failed", webhook_id=webhook_id, error=str(exc))
        return RefreshOutcome(webhook_id, None, str(exc))
    expires_at = datetime.fromisoformat(expiration) if expiration else None
    async with transaction(engine) as conn:
        await conn.execute(
            text(
                "UPDATE airtable_webhooks SET expires_at = :e, refreshed_at = now(), "
                "updated_at = now() WHERE webhook_id = :w"
            ),
            {"e": expires_at, "w": webhook_id},
        )
    log.info("airtable.webhook_refreshed", webhook_id=webhook_id, expires_at=expiration)
    return RefreshOutcome(webhook_id, expires_at)


async def refresh_all(engine: AsyncEngine, client: AirtableClient) -> list[RefreshOutcome]:
    """Refresh every registered webhook; one failure does not stop the others."""
    return [await refresh_webhook(engine, client, r.webhook_id) for r in await registered(engine)]


async def delete_webhook(
    engine: AsyncEngine, client: AirtableClient, webhook_id: str, base_id: str | None = None
) -> None:
    async with transaction(engine) as conn:
        known = (
            await conn.execute(
                text("SELECT base_id FROM airtable_webhooks WHERE webhook_id = :w"),
                {"w": webhook_id},
            )
        ).scalar_one_or_none()
    base = base_id or known
    if base is None:
        raise LookupError(f"{webhook_id} is not registered; pass its base id")
    try:
        await asyncio.to_thread(client.delete_webhook, base, webhook_id)
    except AirtableRequestError as exc:
        if exc.status != 404:
            raise
    async with transaction(engine) as conn:
        await conn.execute(
            text("DELETE FROM airtable_webhooks WHERE webhook_id = :w"), {"w": webhook_id}
        )
    log.info("airtable.webhook_deleted", webhook_id=webhook_id, base_id=base)


async def forget_unserved(engine: AsyncEngine, client: AirtableClient, base_id: str) -> list[str]:
    """Forget the base's registered webhooks Airtable no longer serves (deleted or expired):
    nothing can be fetched or refreshed for them. Returns their ids."""
    served = {hook.id for hook in await asyncio.to_thread(client.webhooks, base_id)}
    gone = [r.webhook_id for r in await registered(engine) if r.base_id == base_id]
    gone = [webhook_id for webhook_id in gone if webhook_id not in served]
    if gone:
        async with transaction(engine) as conn:
            await conn.execute(
                text("DELETE FROM airtable_webhooks WHERE webhook_id = ANY(:ids)"), {"ids": gone}
            )
        log.info("airtable.webhooks_forgotten", webhook_ids=gone, base_id=base_id)
    return gone
