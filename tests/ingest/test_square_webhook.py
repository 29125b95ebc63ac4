from __future__ import annotations

import asyncio
import hashlib
import json
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest
from square.utils.webhooks_helper import verify_signature

from devkit.simulate import signed_square_delivery, square_event, square_headers
from ingest.app import create_app
from sluice.settings import Settings
from tests.support.proxy import database_behind_proxy
from tests.support.services import running_server
from tests.support.square import ROTATED_KEY, SIGNATURE_KEY, WEBHOOK_URL

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

Conn = psycopg.Connection[tuple[Any, ...]]


def counts(db: Conn) -> tuple[int, int]:
    events = db.execute("SELECT count(*) FROM inbound_events").fetchone()
    outbox = db.execute("SELECT count(*) FROM outbox").fetchone()
    assert events is not None
    assert outbox is not None
    return events[0], outbox[0]


@pytest.fixture
async def client(ingest_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=ingest_url, timeout=20) as http:
        yield http


async def post(client: httpx.AsyncClient, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return await client.post("/webhooks/square", content=body, headers=headers)


def fingerprint(position: int, key: str) -> str:
    return f"{position}:{hashlib.sha256(key.encode()).hexdigest()[:6]}"


def repeats(db: Conn) -> list[tuple[Any, ...]]:
    return db.execute(
        "SELECT event_id::text, headers, signature_key FROM delivery_repeats ORDER BY id"
    ).fetchall()


async def test_valid_delivery_stores_event_and_outbox_row(
    client: httpx.AsyncClient, db: Conn
) -> None:
    event = square_event("booking.created", entity_id="bk1example", version=3)
    body, headers = signed_square_delivery(
        event, key=SIGNATURE_KEY, url=WEBHOOK_URL, retry_number=2
    )

    response = await post(client, body, headers)

    assert response.status_code == 200
    answer = response.json()
    assert answer["duplicate"] is False
    row = db.execute(
        "SELECT id::text, source, provider_event_id, event_type, entity_type, entity_id, body,"
        " headers, retry_number, retry_reason, initial_delivery_at IS NOT NULL, signature_key"
        " FROM inbound_events"
    ).fetchone()
    assert row is not None
    assert row[:6] == (
        answer["id"],
        "square",
        event["event_id"],
        "booking.created",
        "booking",
        "bk1example",
    )
    assert bytes(row[6]) == body  # raw bytes exactly as received
    assert row[7]["square-retry-number"] == "2"
    assert row[7]["x-square-hmacsha256-signature"] == headers["x-square-hmacsha256-signature"]
    assert row[8:] == (2, "http_timeout", True, fingerprint(1, SIGNATURE_KEY))
    assert repeats(db) == []
    outbox = db.execute(
        "SELECT topic, key, payload, headers, event_id::text FROM outbox"
    ).fetchall()
    assert len(outbox) == 1
    topic, key, payload, kafka_headers, event_id = outbox[0]
    assert (topic, key, event_id) == ("square.bookings", "bk1example", answer["id"])
    assert payload["id"] == answer["id"]
    assert payload["specversion"] == "1.0"
    assert payload["source"] == "square"
    assert payload["type"] == "booking.created"
    assert payload["subject"] == "bk1example"
    assert payload["providereventid"] == event["event_id"]
    assert payload["data"] == event
    assert kafka_headers["ce_id"] == answer["id"]
    assert kafka_headers["ce_type"] == "booking.created"


async def test_event_ids_are_uuid7_in_the_order_received(
    client: httpx.AsyncClient, db: Conn
) -> None:
    for _ in range(5):
        body, headers = signed_square_delivery(
            square_event("booking.updated"), key=SIGNATURE_KEY, url=WEBHOOK_URL
        )
        assert (await post(client, body, headers)).status_code == 200
        await asyncio.sleep(0.002)  # a millisecond apart at least: ids sort by their time
    rows = db.execute("SELECT id FROM inbound_events ORDER BY received_at").fetchall()
    ids = [row[0] for row in rows]
    assert len(ids) == 5
    assert {i.version for i in ids} == {7}
    assert ids == sorted(ids)
    assert [str(i) for i in ids] == sorted(str(i) for i in ids)  # as text too (dedupe records)


@pytest.mark.parametrize(
    ("event_type", "topic"),
    [("customer.updated", "square.customers"), ("customer.deleted", "square.customers")],
)
async def test_topic_follows_entity(
    client: httpx.AsyncClient, db: Conn, event_type: str, topic: str
) -> None:
    event = square_event(event_type, entity_id="CUST1")
    body, headers = signed_square_delivery(event, key=SIGNATURE_KEY, url=WEBHOOK_URL)
    assert (await post(client, body, headers)).status_code == 200
    assert db.execute("SELECT topic, key FROM outbox").fetchall() == [(topic, "CUST1")]


async def test_unknown_entity_goes_to_events_topic(client: httpx.AsyncClient, db: Conn) -> None:
    event = square_event("customer.created")
    event["type"] = "invoice.created"
    event["data"] = {"type": "invoice", "id": "inv_1", "object": {"invoice": {"id": "inv_1"}}}
    body, headers = signed_square_delivery(event, key=SIGNATURE_KEY, url=WEBHOOK_URL)
    assert (await post(client, body, headers)).status_code == 200
    assert db.execute("SELECT topic, key FROM outbox").fetchall() == [("square.events", "inv_1")]


async def test_wrong_key_is_refused_and_nothing_stored(client: httpx.AsyncClient, db: Conn) -> None:
    body, headers = signed_square_delivery(
        square_event("booking.created"), key="not-the-key", url=WEBHOOK_URL
    )
    response = await post(client, body, headers)
    assert response.status_code == 401
    assert response.json()["error"] == "bad_signature"
    assert counts(db) == (0, 0)


async def test_signature_over_another_url_is_refused(client: httpx.AsyncClient, db: Conn) -> None:
    body, headers = signed_square_delivery(
        square_event("booking.created"), key=SIGNATURE_KEY, url="https://elsewhere.example/hook"
    )
    assert (await post(client, body, headers)).status_code == 401
    assert counts(db) == (0, 0)


async def test_missing_signature_is_refused(client: httpx.AsyncClient, db: Conn) -> None:
    body, headers = signed_square_delivery(
        square_event("booking.created"), key=SIGNATURE_KEY, url=WEBHOOK_URL
    )
    del headers["x-square-hmacsha256-signature"]
    response = await post(client, body, headers)
    assert response.status_code == 401
    assert response.json()["error"] == "missing_signature"
    assert counts(db) == (0, 0)


async def test_rotated_second_key_is_accepted_and_named(
    client: httpx.AsyncClient, db: Conn
) -> None:
    body, headers = signed_square_delivery(
        square_event("booking.updated"), key=ROTATED_KEY, url=WEBHOOK_URL
    )
    assert (await post(client, body, headers)).status_code == 200
    assert counts(db) == (1, 1)
    row = db.execute("SELECT signature_key, headers, body FROM inbound_events").fetchone()
    assert row is not None
    assert row[0] == fingerprint(2, ROTATED_KEY)
    assert ROTATED_KEY not in json.dumps(row[:2])


async def test_stored_event_verifies_again_from_its_row(
    client: httpx.AsyncClient, db: Conn
) -> None:
    body, headers = signed_square_delivery(
        square_event("customer.updated"), key=ROTATED_KEY, url=WEBHOOK_URL
    )
    assert (await post(client, body, headers)).status_code == 200
    row = db.execute("SELECT body, headers FROM inbound_events").fetchone()
    assert row is not None
    stored_body, stored_headers = bytes(row[0]).decode(), row[1]

    def verifies(text: str, key: str) -> bool:
        return verify_signature(
            request_body=text,
            signature_header=stored_headers["x-square-hmacsha256-signature"],
            signature_key=key,
            notification_url=WEBHOOK_URL,
        )

    assert verifies(stored_body, ROTATED_KEY)
    assert not verifies(stored_body, SIGNATURE_KEY)
    assert not verifies(stored_body.replace('"', "'", 1), ROTATED_KEY)


async def test_reserialised_body_fails_verification(client: httpx.AsyncClient, db: Conn) -> None:
    event = square_event("booking.created")
    body, headers = signed_square_delivery(event, key=SIGNATURE_KEY, url=WEBHOOK_URL)
    respaced = json.dumps(json.loads(body), indent=2).encode()
    assert respaced != body
    assert (await post(client, respaced, headers)).status_code == 401
    assert counts(db) == (0, 0)


async def test_duplicate_delivery_answers_duplicate_without_second_outbox_row(
    client: httpx.AsyncClient, db: Conn
) -> None:
    body, headers = signed_square_delivery(
        square_event("booking.created"), key=SIGNATURE_KEY, url=WEBHOOK_URL
    )
    first = await post(client, body, headers)
    retry = {**headers, "square-retry-number": "1", "square-retry-reason": "http_error"}
    second = await post(client, body, retry)
    assert first.json()["duplicate"] is False
    assert second.status_code == 200
    assert second.json() == {"id": first.json()["id"], "duplicate": True}
    assert counts(db) == (1, 1)
    # The repeat is recorded with its own headers; the stored event keeps the first delivery's.
    ((event_id, repeat_headers, key),) = repeats(db)
    assert (event_id, key) == (first.json()["id"], fingerprint(1, SIGNATURE_KEY))
    assert repeat_headers["square-retry-number"] == "1"
    assert repeat_headers["square-retry-reason"] == "http_error"
    assert (
        repeat_headers["x-square-hmacsha256-signature"] == headers["x-square-hmacsha256-signature"]
    )
    stored = db.execute("SELECT headers, retry_number FROM inbound_events").fetchone()
    assert stored is not None
    assert "square-retry-number" not in stored[0]
    assert stored[1] is None


async def test_fifty_concurrent_duplicates_store_exactly_once(
    client: httpx.AsyncClient, db: Conn
) -> None:
    body, headers = signed_square_delivery(
        square_event("booking.created"), key=SIGNATURE_KEY, url=WEBHOOK_URL
    )
    responses = await asyncio.gather(*(post(client, body, headers) for _ in range(50)))
    assert [r.status_code for r in responses] == [200] * 50
    answers = [r.json() for r in responses]
    assert len({a["id"] for a in answers}) == 1
    assert sum(not a["duplicate"] for a in answers) == 1
    assert counts(db) == (1, 1)
    assert {r[0] for r in repeats(db)} == {answers[0]["id"]}
    assert len(repeats(db)) == 49


async def test_concurrent_duplicates_across_two_ingest_processes(
    settings: Settings, db: Conn
) -> None:
    """Two app instances (as two replicas would be) racing on the same event id."""
    body, headers = signed_square_delivery(
        square_event("booking.created"), key=SIGNATURE_KEY, url=WEBHOOK_URL
    )
    async with (
        running_server(create_app(settings)) as one,
        running_server(create_app(settings)) as two,
        httpx.AsyncClient(timeout=20) as http,
    ):
        responses = await asyncio.gather(
            *(
                http.post(f"{(one, two)[i % 2]}/webhooks/square", content=body, headers=headers)
                for i in range(50)
            )
        )
    answers = [r.json() for r in responses]
    assert {r.status_code for r in responses} == {200}
    assert sum(not a["duplicate"] for a in answers) == 1
    assert len({a["id"] for a in answers}) == 1
    assert counts(db) == (1, 1)
    assert len(repeats(db)) == 49


async def test_body_over_limit_is_413(client: httpx.AsyncClient, db: Conn) -> None:
    event = square_event("booking.created")
    event["padding"] = "x" * (65 * 1024)
    body, headers = signed_square_delivery(event, key=SIGNATURE_KEY, url=WEBHOOK_URL)
    response = await post(client, body, headers)
    assert response.status_code == 413
    assert counts(db) == (0, 0)


async def test_streamed_body_is_cut_off_at_the_limit(ingest_url: str, db: Conn) -> None:
    """A chunked body with no length is answered 413 as soon as it passes the limit,
    while the sender is still sending: the server never waits for (or buffers) the rest."""
    parts = urlsplit(ingest_url)
    assert parts.hostname is not None
    assert parts.port is not None
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    writer.write(
        b"POST /webhooks/square HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        b"x-square-hmacsha256-signature: irrelevant\r\n\r\n"
    )
    chunk = b"x" * 16384
    for _ in range(5):  # 80 KiB sent, more than the 64 KiB limit; the body never ends
        writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), timeout=5)
    writer.close()
    assert status_line.startswith(b"HTTP/1.1 413")
    assert counts(db) == (0, 0)


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda e: e.pop("event_id"), "event_id"),
        (lambda e: e.update(created_at="yesterday"), "created_at"),
        (lambda e: e.update(data="nope"), "data"),
        (lambda e: e["data"].pop("id"), "data.id"),
        (lambda e: e.update(type=""), "type"),
    ],
)
async def test_signed_body_that_is_not_an_envelope_is_400_naming_the_field(
    client: httpx.AsyncClient, db: Conn, mutate: Any, field: str
) -> None:
    event = square_event("booking.created")
    mutate(event)
    body, headers = signed_square_delivery(event, key=SIGNATURE_KEY, url=WEBHOOK_URL)
    response = await post(client, body, headers)
    assert response.status_code == 400
    answer = response.json()
    assert answer["error"] == "malformed"
    assert field in {e["field"] for e in answer["errors"]}
    assert counts(db) == (0, 0)


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b'{"a": 1'])
async def test_signed_garbage_is_400(client: httpx.AsyncClient, db: Conn, body: bytes) -> None:
    headers = square_headers(body, key=SIGNATURE_KEY, url=WEBHOOK_URL)
    response = await post(client, body, headers)
    assert response.status_code == 400
    assert counts(db) == (0, 0)


async def test_body_that_is_not_utf8_is_401_whatever_its_signature(
    client: httpx.AsyncClient, db: Conn
) -> None:
    body = b'{"merchant_id": "\xff\xfe"}'
    headers = square_headers(body, key=SIGNATURE_KEY, url=WEBHOOK_URL)
    response = await post(client, body, headers)
    assert response.status_code == 401
    assert response.json()["error"] == "bad_signature"
    assert counts(db) == (0, 0)


async def test_nul_character_is_400_not_500(client: httpx.AsyncClient, db: Conn) -> None:
    event = square_event("customer.updated")
    event["data"]["object"]["customer"]["note"] = "a\u0000b"
    body, headers = signed_square_delivery(event, key=SIGNATURE_KEY, url=WEBHOOK_URL)
    response = await post(client, body, headers)
    assert response.status_code == 400
    assert "NUL character" in response.json()["detail"]
    assert counts(db) == (0, 0)


async def test_not_configured_refuses_every_request(database_url: str, db: Conn) -> None:
    settings = Settings(DATABASE_URL=database_url)
    body, headers = signed_square_delivery(
        square_event("booking.created"), key=SIGNATURE_KEY, url=WEBHOOK_URL
    )
    async with running_server(create_app(settings)) as url, httpx.AsyncClient() as http:
        response = await http.post(f"{url}/webhooks/square", content=body, headers=headers)
    assert response.status_code == 503
    assert response.json()["error"] == "not_configured"
    assert counts(db) == (0, 0)


async def test_event_and_outbox_row_are_written_together(
    client: httpx.AsyncClient, db: Conn
) -> None:
    db.execute(
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
        "$$BEGIN RAISE EXCEPTION 'outbox refused'; END$$"
    )
    db.execute(
        "CREATE TRIGGER refuse BEFORE INSERT ON outbox FOR EACH ROW EXECUTE FUNCTION refuse()"
    )
    body, headers = signed_square_delivery(
        square_event("booking.created"), key=SIGNATURE_KEY, url=WEBHOOK_URL
    )
    response = await post(client, body, headers)
    # Neither an outage nor the content's fault: the server's own failure, which Square retries.
    assert (response.status_code, response.json()["error"]) == (500, "internal")
    assert counts(db) == (0, 0)

    db.execute("DROP TRIGGER refuse ON outbox")
    assert (await post(client, body, headers)).json()["duplicate"] is False
    assert counts(db) == (1, 1)


async def test_database_outage_is_503_and_nothing_half_written(database_url: str, db: Conn) -> None:
    deliveries = [
        signed_square_delivery(square_event("booking.created"), key=SIGNATURE_KEY, url=WEBHOOK_URL)
        for _ in range(3)
    ]
    async with (
        database_behind_proxy(database_url) as (via_proxy, proxy),
        running_server(
            create_app(
                Settings(
                    DATABASE_URL=via_proxy,
                    SQUARE_WEBHOOK_SIGNATURE_KEYS=SIGNATURE_KEY,
                    SQUARE_WEBHOOK_URL=WEBHOOK_URL,
                )
            )
        ) as url,
        httpx.AsyncClient(base_url=url, timeout=20) as http,
    ):
        assert (await post(http, *deliveries[0])).status_code == 200

        await proxy.cut()
        during = await asyncio.gather(*(post(http, *d) for d in deliveries[1:]))
        assert [r.status_code for r in during] == [503, 503]
        assert all(r.headers["retry-after"] for r in during)
        assert (await http.get("/readyz")).status_code == 503
        assert counts(db) == (1, 1)

        await proxy.restore()
        after = await asyncio.gather(*(post(http, *d) for d in deliveries[1:]))
        assert [r.json()["duplicate"] for r in after] == [False, False]
        assert (await http.get("/readyz")).status_code == 200
    assert counts(db) == (3, 3)


async def test_health_endpoints(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    assert (await client.get("/readyz")).json() == {"status": "ready"}


async def test_webhook_paths_answer_only_post(client: httpx.AsyncClient, db: Conn) -> None:
    for path in ("/webhooks/square", "/webhooks/airtable"):
        response = await client.get(path)
        assert response.status_code == 405
        assert response.headers["allow"] == "POST"
        assert response.json()["error"] == "method_not_allowed"
    assert counts(db) == (0, 0)
