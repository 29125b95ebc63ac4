"""`sluice airtable ...` and `sluice simulate airtable`: webhooks, the fake API, test pings."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from commands.context import settings as load_settings
from devkit.dev_airtable import DEV_BASE_ID

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from datetime import datetime

    from ingest.airtable_webhooks import RefreshOutcome
    from providers.airtable import AirtableClient

airtable_app = typer.Typer(no_args_is_help=True, help="Airtable webhooks and the fake API.")
webhooks_app = typer.Typer(no_args_is_help=True, help="Create, list, refresh and delete webhooks.")
airtable_app.add_typer(webhooks_app, name="webhooks")

R = TypeVar("R")
DEFAULT_STATE_DIR = Path(".sluice")


def _run(work: Callable[[Any, AirtableClient], Awaitable[R]]) -> R:
    from providers.airtable import AirtableClient  # noqa: PLC0415
    from sluice.db import create_engine  # noqa: PLC0415

    settings = load_settings()
    client = AirtableClient.from_settings(settings)

    async def main() -> R:
        engine = create_engine(settings.require_database_url(), pool_size=1)
        try:
            return await work(engine, client)
        finally:
            await engine.dispose()

    return asyncio.run(main())


@webhooks_app.command("create")
def webhooks_create(
    base_id: Annotated[str, typer.Argument(help="The base to watch (app...)")],
    url: Annotated[str, typer.Option(help="Notification URL: this service's /webhooks/airtable")],
    table: Annotated[str | None, typer.Option(help="Only this table id (tbl...)")] = None,
) -> None:
    """Create a webhook; prints its MAC secret ONCE, for AIRTABLE_WEBHOOK_SECRETS."""
    from ingest.airtable_webhooks import create_webhook  # noqa: PLC0415

    created = _run(
        lambda engine, client: create_webhook(engine, client, base_id, url, table_id=table)
    )
    typer.echo(
        json.dumps(
            {
                "webhook_id": created.webhook_id,
                "base_id": created.base_id,
                "expires_at": created.expires_at.isoformat() if created.expires_at else None,
                "mac_secret_base64": created.mac_secret_base64,
                "add_to_AIRTABLE_WEBHOOK_SECRETS": (
                    f"{created.webhook_id}={created.mac_secret_base64}"
                ),
            },
            indent=2,
        )
    )
    typer.echo("Store the MAC secret now: Airtable never shows it again.", err=True)


@webhooks_app.command("list")
def webhooks_list(
    base_id: Annotated[list[str] | None, typer.Option("--base", help="Default: registered")] = None,
) -> None:
    """Airtable's webhooks, with sluice's cursor for each and what their payloads reported:
    the last error payload (the webhook is broken: recreate it) and tables deleted."""
    from ingest.airtable_webhooks import list_webhooks  # noqa: PLC0415

    for hook in _run(lambda engine, client: list_webhooks(engine, client, base_id)):
        ours = hook.registered
        last_error = (
            {"code": ours.last_error_code, "at": _iso(ours.last_error_at)}
            if ours is not None and ours.last_error_code is not None
            else None
        )
        typer.echo(
            json.dumps(
                {
                    "webhook_id": hook.webhook_id,
                    "base_id": hook.base_id,
                    "sluice_cursor": hook.cursor,
                    "airtable_next_payload": hook.next_payload,
                    "expires_at": _iso(hook.expires_at),
                    "notification_url": hook.notification_url,
                    "enabled": hook.enabled,
                    "notifications_enabled": hook.notifications_enabled,
                    "last_error": last_error,
                    "destroyed_table_ids": list(ours.destroyed_table_ids) if ours else [],
                }
            )
        )


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


@webhooks_app.command("refresh")
def webhooks_refresh(
    webhook_id: Annotated[str | None, typer.Argument()] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every registered webhook")] = False,
    every: Annotated[
        float | None, typer.Option(help="Keep running, refreshing every N seconds")
    ] = None,
) -> None:
    """Extend webhooks by seven days. Run `--all` on a schedule (daily) so none expires."""
    from ingest.airtable_webhooks import refresh_all, refresh_webhook  # noqa: PLC0415

    if all_ == (webhook_id is not None):
        raise typer.BadParameter("give a webhook id or --all")

    def once() -> list[RefreshOutcome]:
        if webhook_id is not None:
            return [_run(lambda engine, client: refresh_webhook(engine, client, webhook_id))]
        return _run(refresh_all)

    while True:
        outcomes = once()
        _export_refresh_metrics(outcomes)
        for outcome in outcomes:
            expires = outcome.expires_at.isoformat() if outcome.expires_at else None
            typer.echo(
                json.dumps(
                    {
                        "webhook_id": outcome.webhook_id,
                        "expires_at": expires,
                        "error": outcome.error,
                    }
                )
            )
        if every is None:
            if any(o.error for o in outcomes):
                raise typer.Exit(1)
            return
        time.sleep(every)


def _export_refresh_metrics(outcomes: list[RefreshOutcome]) -> None:
    """The nearest expiry after this refresh and the failures, for the run-once CronJob."""
    from prometheus_client import CollectorRegistry  # noqa: PLC0415

    from ingest.airtable_webhooks import nearest_expiry  # noqa: PLC0415
    from sluice.metrics import export_once, gauge  # noqa: PLC0415

    settings = load_settings()
    if settings.metrics_textfile_dir is None and settings.pushgateway_url is None:
        return
    registry = CollectorRegistry()
    nearest = _run(lambda engine, _client: nearest_expiry(engine))
    gauge("sluice_airtable_webhook_nearest_expiry_timestamp_seconds", registry).set(nearest or 0)
    failed = sum(1 for o in outcomes if o.error)
    gauge("sluice_airtable_webhook_refresh_failures", registry).set(failed)
    try:
        export_once(
            registry,
            textfile_dir=settings.metrics_textfile_dir,
            pushgateway=settings.pushgateway_url,
            job="sluice-airtable-webhooks-refresh",
        )
    except OSError as exc:  # a Pushgateway that is down must not fail the refresh itself
        typer.echo(f"sluice: could not export metrics: {exc}", err=True)


@webhooks_app.command("delete")
def webhooks_delete(
    webhook_id: Annotated[str, typer.Argument()],
    base_id: Annotated[str | None, typer.Option("--base", help="If not registered")] = None,
) -> None:
    """Delete a webhook at Airtable and forget its cursor."""
    from ingest.airtable_webhooks import delete_webhook  # noqa: PLC0415

    _run(lambda engine, client: delete_webhook(engine, client, webhook_id, base_id))
    typer.echo(f"deleted {webhook_id}")


@airtable_app.command("fake-api")
def fake_api(
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8090,
    base_id: Annotated[str, typer.Option(help="Seed a base with a Leads table")] = DEV_BASE_ID,
) -> None:
    """Run the fake Airtable API (development and tests only), with a base holding Leads."""
    import uvicorn  # noqa: PLC0415

    from devkit.fakes.airtable import FakeAirtable, add_leads_table  # noqa: PLC0415

    fake = FakeAirtable(rate_limit_per_base=5)
    fake.add_base("Sales (fake)", base_id)
    add_leads_table(fake, base_id)
    uvicorn.run(fake.app, host=host, port=port, access_log=False, log_config=None)


def simulate_airtable(
    action: Annotated[str, typer.Argument(help="create, update or destroy a lead")] = "create",
    record_id: Annotated[str | None, typer.Option(help="For update and destroy")] = None,
    field: Annotated[list[str] | None, typer.Option(help='"Field Name=value", repeatable')] = None,
    ping_only: Annotated[bool, typer.Option(help="Send a ping without a change")] = False,
    state_dir: Annotated[Path, typer.Option(envvar="SLUICE_STATE_DIR")] = DEFAULT_STATE_DIR,
) -> None:
    """Make a change in the dev fake Airtable, then send the signed ping Airtable would send."""
    import httpx  # noqa: PLC0415

    from devkit.dev import read_dev_info  # noqa: PLC0415
    from devkit.simulate_airtable import airtable_ping, signed_airtable_ping  # noqa: PLC0415

    info = read_dev_info(state_dir)
    needed = ("airtable_webhook_url", "airtable_base_id", "airtable_webhook_id", "airtable_mac")
    if not all(info.get(k) for k in needed):
        raise typer.BadParameter("no running `sluice dev` with an Airtable webhook found")
    fields = dict(item.split("=", 1) for item in field or [])
    with httpx.Client(timeout=15) as http:
        if not ping_only and info.get("airtable_fake_api_url"):
            if action == "create" and not fields:
                fields = {
                    "Full Name": "Ada Lovelace",
                    "Email": "ada@example.com",
                    "Lead Status": "New",
                }
            change = http.post(
                f"{info['airtable_fake_api_url']}/_fake/bases/{info['airtable_base_id']}"
                "/tables/Leads/changes",
                json={"action": action, "recordId": record_id, "fields": fields},
                headers={"authorization": f"Bearer {info['airtable_fake_token']}"},
            )
            typer.echo(json.dumps({"change": change.status_code, "response": change.json()}))
            if change.status_code >= 300:
                raise typer.Exit(1)
        ping = airtable_ping(info["airtable_base_id"], info["airtable_webhook_id"])
        body, headers = signed_airtable_ping(ping, info["airtable_mac"])
        response = http.post(info["airtable_webhook_url"], content=body, headers=headers)
        typer.echo(json.dumps({"ping": response.status_code, "response": response.json()}))
        if response.status_code >= 300:
            raise typer.Exit(1)
