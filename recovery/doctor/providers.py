"""The doctor's checks of the providers: Square's signature settings and token, Airtable's
webhook secrets, and the registered Airtable webhooks' expiry, cursor and health."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from sqlalchemy import text

from ingest.airtable_webhooks import list_webhooks
from providers.airtable import AirtableClient
from providers.square import SquareReader, SquareRequestError
from recovery.doctor.findings import Finding, fail, ok, warn
from sluice.db import create_engine

if TYPE_CHECKING:
    from collections.abc import KeysView

    from sqlalchemy import Row
    from sqlalchemy.ext.asyncio import AsyncEngine

    from sluice.settings import Settings

# Refresh runs daily (the CronJob): a webhook this close to expiry has missed refreshes.
EXPIRY_WARNING = timedelta(days=2)
_LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


def _https_or_local(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme == "https" or (parts.hostname or "") in _LOCAL_HOSTS


async def square_signatures(settings: Settings) -> list[Finding]:
    keys, url = settings.square_webhook_signature_keys, settings.square_webhook_url
    env = settings.square_environment
    what = "Square webhook signatures"
    if not keys and not url:
        return [
            warn(
                what,
                "not configured: POST /webhooks/square refuses every delivery",
                "set SQUARE_WEBHOOK_SIGNATURE_KEYS and SQUARE_WEBHOOK_URL if Square sends here",
            )
        ]
    if not keys or not url:
        missing = "SQUARE_WEBHOOK_URL" if keys else "SQUARE_WEBHOOK_SIGNATURE_KEYS"
        return [fail(what, f"{missing} is not set: every delivery is refused", f"set {missing}")]
    found = ok(what, f"{len(keys)} key(s) of {env}'s subscriptions, URL {url}")
    if not _https_or_local(url):
        return [
            found,
            warn(
                "SQUARE_WEBHOOK_URL",
                "is not HTTPS",
                "Square delivers to HTTPS notification URLs: use the subscription's URL",
            ),
        ]
    return [found]


async def square_token(settings: Settings) -> list[Finding]:
    what = f"Square token ({settings.square_environment})"
    if settings.square_access_token is None:
        return [
            warn(
                what,
                "SQUARE_ACCESS_TOKEN is not set: `sluice reconcile square` cannot run",
                "set SQUARE_ACCESS_TOKEN to an access token of SQUARE_ENVIRONMENT's application",
            )
        ]
    try:
        async with SquareReader.from_settings(settings, sdk_retries=0) as reader:
            merchant = await reader.merchant_id()
    except SquareRequestError as exc:
        if exc.status not in (401, 403):
            raise
        return [
            fail(
                what,
                f"{settings.square_endpoint} refused the token ({exc.status})",
                f"set SQUARE_ACCESS_TOKEN to a token of Square's {settings.square_environment} "
                "environment (SQUARE_ENVIRONMENT), with MERCHANT_PROFILE_READ",
            )
        ]
    return [ok(what, f"merchant {merchant} at {settings.square_endpoint}")]


async def airtable_webhooks(settings: Settings) -> list[Finding]:
    """Each registered webhook: a MAC secret for its pings, its expiry, sluice's cursor, the
    last error payload; with AIRTABLE_API_KEY, also whether Airtable still serves it."""
    secrets = settings.airtable_webhook_secrets
    if settings.database_url is None:
        return [fail("Airtable webhooks", "DATABASE_URL is not set: cannot read the registry")]
    engine = create_engine(settings.database_url, pool_size=1, application_name="sluice-doctor")
    try:
        async with engine.connect() as conn:
            rows = (
                await conn.execute(
                    text(
                        "SELECT webhook_id, base_id, cursor, expires_at, last_error_code "
                        "FROM airtable_webhooks ORDER BY webhook_id"
                    )
                )
            ).all()
        served = await _airtable_view(settings, engine) if rows else {}
    finally:
        await engine.dispose()
    if not rows and not secrets:
        return [warn("Airtable webhooks", "none registered", "`sluice airtable webhooks create`")]
    findings = [_one_webhook(row, secrets.keys(), served) for row in rows]
    registered = {row.webhook_id for row in rows}
    findings.extend(
        warn(
            f"Airtable webhook {webhook_id}",
            "has a secret in AIRTABLE_WEBHOOK_SECRETS but is not registered: its pings are "
            "accepted and fetch nothing",
            "remove it, or register it with `sluice airtable webhooks create`",
        )
        for webhook_id in sorted(secrets.keys() - registered)
    )
    return findings


def _one_webhook(
    row: Row[Any], secret_ids: KeysView[str], served: dict[str, int] | None
) -> Finding:
    webhook_id: str = row.webhook_id
    what = f"Airtable webhook {webhook_id}"
    cursor: int = row.cursor
    expires_at: datetime | None = row.expires_at
    error_code: str | None = row.last_error_code
    recreate = "delete and recreate it (`sluice airtable webhooks delete/create`)"
    if webhook_id not in secret_ids:
        return fail(
            what,
            "no MAC secret in AIRTABLE_WEBHOOK_SECRETS: its pings are refused",
            f"add {webhook_id}=<macSecretBase64> to AIRTABLE_WEBHOOK_SECRETS",
        )
    if error_code is not None:
        return fail(what, f"its last payload was an error ({error_code})", recreate)
    if served is not None and webhook_id not in served:
        return fail(what, "Airtable does not know it (deleted or expired)", recreate)
    now = datetime.now(UTC)
    if expires_at is not None and expires_at <= now:
        return fail(what, f"expired at {expires_at.isoformat()}", recreate)
    backlog = f", Airtable's next payload {served[webhook_id]}" if served is not None else ""
    detail = f"cursor {cursor}{backlog}, expires {expires_at.isoformat() if expires_at else '?'}"
    if expires_at is not None and expires_at - now < EXPIRY_WARNING:
        return warn(what, detail, "run `sluice airtable webhooks refresh --all` (daily)")
    return ok(what, detail)


async def _airtable_view(settings: Settings, engine: AsyncEngine) -> dict[str, int] | None:
    """Airtable's next payload per webhook it serves; None without AIRTABLE_API_KEY."""
    if settings.airtable_api_key is None:
        return None
    client = AirtableClient.from_settings(settings)
    statuses = await list_webhooks(engine, client)
    # A webhook Airtable no longer serves is listed with no next payload.
    return {s.webhook_id: s.next_payload for s in statuses if s.next_payload is not None}


async def airtable_key(settings: Settings) -> list[Finding]:
    if settings.airtable_api_key is None:
        return [
            warn(
                "Airtable token",
                "AIRTABLE_API_KEY is not set: no payloads are fetched, no write-back",
                "set AIRTABLE_API_KEY to a personal access token with webhook and record scopes",
            )
        ]
    return [ok("Airtable token", f"set, for {settings.airtable_endpoint}")]
