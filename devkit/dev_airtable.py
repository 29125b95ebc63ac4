"""Airtable in `sluice dev`: with no AIRTABLE_API_URL, the fake API runs as a component.

The fake is started first, a webhook is registered in it through the same code an operator
uses (`sluice airtable webhooks create`), and its id and MAC secret go into the environment of
the other components, exactly as an operator would configure them against real Airtable.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx

from devkit.fake_process import start_fake_api
from devkit.fakes.airtable import FakeAirtable

if TYPE_CHECKING:
    import subprocess

    from sluice.settings import Settings

# The base `sluice dev` seeds in its fake Airtable, with a Leads table.
DEV_BASE_ID = "appSLUICEdevBase1"

FAKE_TOKEN = FakeAirtable().token


@dataclass
class DevAirtable:
    process: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


def start_dev_airtable(settings: Settings, database_url: str, ingest_port: int) -> DevAirtable:
    if settings.airtable_api_url is not None:
        return DevAirtable()  # a real (or own) Airtable API: configured by the operator
    headers = {"authorization": f"Bearer {FAKE_TOKEN}"}
    process, url = start_fake_api(
        "airtable",
        lambda url: httpx.get(f"{url}/v0/meta/bases/{DEV_BASE_ID}/tables", headers=headers),
    )
    try:
        notification_url = f"http://127.0.0.1:{ingest_port}/webhooks/airtable"
        webhook_id, mac = asyncio.run(_register(database_url, url, notification_url))
    except BaseException:
        process.terminate()
        raise
    return DevAirtable(
        process=process,
        env={
            "AIRTABLE_API_URL": url,
            "AIRTABLE_API_KEY": FAKE_TOKEN,
            "AIRTABLE_WEBHOOK_SECRETS": f"{webhook_id}={mac}",
            # The fake's token belongs to this user: the write-back's echoes come back as theirs.
            "AIRTABLE_USER_ID": FakeAirtable().user_id,
        },
        info={
            "airtable_fake_api_url": url,
            "airtable_fake_token": FAKE_TOKEN,
            "airtable_base_id": DEV_BASE_ID,
            "airtable_webhook_id": webhook_id,
            "airtable_mac": mac,
            "airtable_webhook_url": notification_url,
        },
    )


async def _register(database_url: str, api_url: str, notification_url: str) -> tuple[str, str]:
    from ingest.airtable_webhooks import create_webhook, forget_unserved  # noqa: PLC0415
    from providers.airtable import AirtableClient, BaseRateLimiter  # noqa: PLC0415
    from sluice.db import create_engine  # noqa: PLC0415

    client = AirtableClient(FAKE_TOKEN, endpoint_url=api_url, limiter=BaseRateLimiter(5, 30))
    engine = create_engine(database_url, pool_size=1)
    try:
        # The fake starts empty each run: the webhook registered by the last run is gone from
        # it, and would fail every `reconcile airtable` and `webhooks refresh --all`.
        await forget_unserved(engine, client, DEV_BASE_ID)
        created = await create_webhook(engine, client, DEV_BASE_ID, notification_url)
    finally:
        await engine.dispose()
    return created.webhook_id, created.mac_secret_base64
