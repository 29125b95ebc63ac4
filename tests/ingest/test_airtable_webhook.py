from __future__ import annotations

import base64
import hashlib
import secrets
from typing import TYPE_CHECKING, Any

import httpx
import psycopg
import pytest
from pyairtable.models.webhook import WebhookNotification

from devkit.simulate_airtable import airtable_ping, signed_airtable_ping
from ingest.app import create_app
from schemas.airtable import AirtablePing
from sluice.settings import Settings
from tests.support.services import running_server

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

Conn = psycopg.Connection[tuple[Any, ...]]

BASE = "appSLUICEtest0001"
HOOK = "achSLUICEtest0001"
OTHER_HOOK = "achSLUICEtest0002"
SECRET = base64.b64encode(b"a" * 32).decode()
OTHER_SECRET = base64.b64encode(b"b" * 32).decode()


def counts(db: Conn) -> tuple[int, int]:
    row = db.execute(
        "SELECT (SELECT count(*) FROM inbound_events), (SELECT count(*) FROM outbox)"
    ).fetchone()
    assert row is not None
    return row[0], row[1]


@pytest.fixture
async def client(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        DATABASE_URL=database_url,
        AIRTABLE_WEBHOOK_SECRETS=f"{HOOK}={SECRET},{OTHER_HOOK}={OTHER_SECRET}",
        SLUICE_MAX_BODY_BYTES=4096,
    )
    async with (
        running_server(create_app(settings)) as url,
        httpx.AsyncClient(base_url=url, timeout=20) as http,
    ):
        yield http


async def post(client: httpx.AsyncClient, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return await client.post("/webhooks/airtable", content=body, headers=headers)


async def test_signed_ping_stores_event_and_outbox_row(client: httpx.AsyncClient, db: Conn) -> None:
    ping = airtable_ping(BASE, HOOK)
    body, headers = signed_airtable_ping(ping, SECRET)

    response = await post(client, body, headers)

    assert response.status_code == 200
    answer = response.json()
    assert answer["duplicate"] is False
    event = db.execute(
        "SELECT id::text, source, provider_event_id, event_type, entity_id, body"
        " FROM inbound_events"
    ).fetchone()
    assert event is not None
    assert event[:5] == (
        answer["id"],
        "airtable",
        AirtablePing.model_validate(ping).provider_event_id,
        "airtable.ping",
        HOOK,
    )
    assert bytes(event[5]) == body
    outbox = db.execute("SELECT topic, key, payload, event_id::text FROM outbox").fetchall()
    assert len(outbox) == 1
    topic, key, payload, event_id = outbox[0]
    assert (topic, key, event_id) == ("airtable.pings", HOOK, answer["id"])
    assert payload["type"] == "airtable.ping"
    assert payload["data"] == ping


async def test_second_webhook_verifies_with_its_own_secret(
    client: httpx.AsyncClient, db: Conn
) -> None:
    body, headers = signed_airtable_ping(airtable_ping(BASE, OTHER_HOOK), OTHER_SECRET)
    assert (await post(client, body, headers)).status_code == 200
    assert counts(db) == (1, 1)


async def test_ping_keeps_its_mac_and_the_webhook_that_verified_it(
    client: httpx.AsyncClient, db: Conn
) -> None:
    body, headers = signed_airtable_ping(airtable_ping(BASE, OTHER_HOOK), OTHER_SECRET)
    assert (await post(client, body, headers)).status_code == 200
    row = db.execute("SELECT body, headers, signature_key FROM inbound_events").fetchone()
    assert row is not None
    stored_body, stored_headers, key = bytes(row[0]).decode(), row[1], row[2]
    assert key == f"{OTHER_HOOK}:{hashlib.sha256(OTHER_SECRET.encode()).hexdigest()[:6]}"
    assert OTHER_SECRET not in str(row[1:])
    # The stored MAC still verifies the stored body, with that webhook's secret only.
    mac = stored_headers["x-airtable-content-mac"]
    notification = WebhookNotification.from_request(stored_body, mac, OTHER_SECRET)
    assert notification.webhook.id == OTHER_HOOK
    with pytest.raises(ValueError, match="X-Airtable-Content-MAC"):
        WebhookNotification.from_request(stored_body, mac, SECRET)


async def test_repeated_ping_is_stored_once_and_its_repeat_recorded(
    client: httpx.AsyncClient, db: Conn
) -> None:
    body, headers = signed_airtable_ping(airtable_ping(BASE, HOOK), SECRET)
    first = await post(client, body, headers)
    second = await post(client, body, {**headers, "user-agent": "Airtable retry"})
    assert second.status_code == 200
    assert second.json() == {"id": first.json()["id"], "duplicate": True}
    assert counts(db) == (1, 1)
    repeats = db.execute(
        "SELECT event_id::text, headers, signature_key FROM delivery_repeats"
    ).fetchall()
    expected_key = f"{HOOK}:{hashlib.sha256(SECRET.encode()).hexdigest()[:6]}"
    assert [(r[0], r[1]["user-agent"], r[2]) for r in repeats] == [
        (first.json()["id"], "Airtable retry", expected_key)
    ]


async def test_wrong_mac_is_401_and_nothing_stored(client: httpx.AsyncClient, db: Conn) -> None:
    body, headers = signed_airtable_ping(
        airtable_ping(BASE, HOOK), base64.b64encode(secrets.token_bytes(32)).decode()
    )
    response = await post(client, body, headers)
    assert response.status_code == 401
    assert response.json()["error"] == "bad_signature"
    assert counts(db) == (0, 0)


async def test_tampered_body_is_401(client: httpx.AsyncClient, db: Conn) -> None:
    body, headers = signed_airtable_ping(airtable_ping(BASE, HOOK), SECRET)
    response = await post(client, body.replace(BASE.encode(), b"appSOMEONEelse001"), headers)
    assert response.status_code == 401
    assert counts(db) == (0, 0)


async def test_unknown_webhook_is_401(client: httpx.AsyncClient, db: Conn) -> None:
    unknown_secret = base64.b64encode(b"c" * 32).decode()
    body, headers = signed_airtable_ping(airtable_ping(BASE, "achUNKNOWNhook001"), unknown_secret)
    assert (await post(client, body, headers)).status_code == 401
    assert counts(db) == (0, 0)


async def test_ping_naming_another_webhook_than_its_signer_is_401(
    client: httpx.AsyncClient, db: Conn
) -> None:
    # Signed with HOOK's secret, but claims to be OTHER_HOOK's ping.
    body, headers = signed_airtable_ping(airtable_ping(BASE, OTHER_HOOK), SECRET)
    response = await post(client, body, headers)
    assert response.status_code == 401
    assert response.json()["error"] == "unknown_webhook"
    assert counts(db) == (0, 0)


async def test_missing_mac_is_401(client: httpx.AsyncClient, db: Conn) -> None:
    body, _ = signed_airtable_ping(airtable_ping(BASE, HOOK), SECRET)
    response = await post(client, body, {"content-type": "application/json"})
    assert response.status_code == 401
    assert counts(db) == (0, 0)


async def test_signed_body_that_is_not_a_ping_is_400(client: httpx.AsyncClient, db: Conn) -> None:
    ping = airtable_ping(BASE, HOOK)
    del ping["timestamp"]
    body, headers = signed_airtable_ping(ping, SECRET)
    response = await post(client, body, headers)
    assert response.status_code == 400
    assert {e["field"] for e in response.json()["errors"]} == {"timestamp"}
    assert counts(db) == (0, 0)


async def test_body_over_limit_is_413(client: httpx.AsyncClient, db: Conn) -> None:
    ping = airtable_ping(BASE, HOOK)
    ping["padding"] = "x" * 5000
    body, headers = signed_airtable_ping(ping, SECRET)
    assert (await post(client, body, headers)).status_code == 413
    assert counts(db) == (0, 0)


async def test_no_secrets_configured_refuses_every_ping(database_url: str, db: Conn) -> None:
    app = create_app(Settings(DATABASE_URL=database_url))
    body, headers = signed_airtable_ping(airtable_ping(BASE, HOOK), SECRET)
    async with running_server(app) as url, httpx.AsyncClient(base_url=url) as http:
        response = await http.post("/webhooks/airtable", content=body, headers=headers)
    assert response.status_code == 503
    assert counts(db) == (0, 0)


def test_secrets_setting_keeps_base64_padding() -> None:
    settings = Settings(AIRTABLE_WEBHOOK_SECRETS=f" {HOOK}={SECRET} , {OTHER_HOOK}=YWJjZA== ")
    values = {k: v.get_secret_value() for k, v in settings.airtable_webhook_secrets.items()}
    assert values == {HOOK: SECRET, OTHER_HOOK: "YWJjZA=="}
    with pytest.raises(ValueError, match="webhookId=macSecretBase64"):
        Settings(AIRTABLE_WEBHOOK_SECRETS="just-a-secret")
