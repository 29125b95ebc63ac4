"""An event's journey: what each consumer did with it, recorded with its effect, read back by
`GET /admin/events/{id}` and searched by entity."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import datetime
from typing import TYPE_CHECKING, Any

import httpx

from commands.contracts import openapi_document
from consumers.jobs import JobsProjection
from consumers.message import ConsumedMessage
from consumers.runtime import ConsumerConfig, ConsumerRuntime
from devkit.simulate import signed_square_delivery, square_event
from devkit.simulate_airtable import airtable_ping, signed_airtable_ping
from ingest.app import create_app
from recovery.admin import create_admin_app
from recovery.journey import REPEATS_SHOWN, find_journey
from sluice.settings import Settings
from tests.support.recovery import outbox_rows, store_events
from tests.support.services import running_server
from tests.support.square import ROTATED_KEY, SIGNATURE_KEY, WEBHOOK_URL

if TYPE_CHECKING:
    import psycopg
    from sqlalchemy.ext.asyncio import AsyncEngine

TOKEN = "admin-token-for-tests"  # noqa: S105
AUTH = {"Authorization": f"Bearer {TOKEN}"}
HOOK = "achSLUICEjourney1"
MAC_SECRET = base64.b64encode(b"j" * 32).decode()


def sha256_prefix(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()[:6]


def published(rows: list[dict[str, Any]], first_offset: int) -> list[ConsumedMessage]:
    """Outbox rows as the relay publishes them: offsets in order, the publish time stamped."""
    return [
        ConsumedMessage(
            topic=row["topic"],
            partition=3,
            offset=first_offset + n,
            key=row["key"].encode(),
            value=json.dumps(row["payload"]).encode(),
            headers=tuple((k, v.encode()) for k, v in row["headers"].items()),
            timestamp=1_767_225_600_000,  # 2026-01-01T00:00:00Z
        )
        for n, row in enumerate(rows)
    ]


def outcomes(db: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    """Every consumer outcome: applied and stale ones are dedupe records, the rest their own."""
    return db.execute(
        """SELECT entity_key, outcome, origin, detail FROM (
               SELECT entity_key, outcome, origin, detail, applied_at AS at, "offset"
               FROM consumer_dedupe
               UNION ALL
               SELECT entity_key, outcome, origin, detail, recorded_at, "offset"
               FROM event_outcomes) AS o
           ORDER BY at, "offset"
        """
    ).fetchall()


async def test_each_message_has_its_outcome_written_with_its_effect(
    engine: AsyncEngine, db: psycopg.Connection[Any]
) -> None:
    runtime = ConsumerRuntime(
        JobsProjection(), engine, ConsumerConfig(bootstrap_servers="unused", group_id="jobs")
    )
    newer = square_event("booking.updated", entity_id="bkA", version=3)
    older = square_event("booking.updated", entity_id="bkA", version=2)
    other = square_event("booking.created", entity_id="bkB", version=1)
    await store_events(engine, [newer, older, other])
    first, second, third = published(outbox_rows(db), 10)
    # A newer version, then an older one of the same booking in a later batch, then a redelivery.
    await runtime.apply_batch([first, third])
    await runtime.apply_batch([second])
    await runtime.apply_batch([first])
    broken = ConsumedMessage("t", 0, 99, b"bkC", b"{not json", (("ce_id", b"evt-broken"),))
    await runtime.apply_batch([broken])

    error = db.execute("SELECT error_type, error FROM dead_letters").fetchone()
    assert error is not None
    assert outcomes(db) == [
        ("bkA", "applied", "delivered", None),
        ("bkB", "applied", "delivered", None),
        ("bkA", "stale", "delivered", {"key": "bkA", "row_version": 3, "event_version": 2}),
        ("bkA", "duplicate", "delivered", None),
        ("bkC", "dead_lettered", "delivered", {"error_type": error[0], "error": error[1]}),
    ]
    assert error[0] == "InvalidMessageError"
    # The older version changed nothing: the row still holds version 3.
    version = db.execute("SELECT booking_version FROM jobs WHERE booking_id = 'bkA'").fetchone()
    assert version == (3,)
    assert runtime.stats.stale == 0  # apply_batch leaves the run loop's counters alone


async def test_an_older_version_in_the_same_batch_is_stale_too(
    engine: AsyncEngine, db: psycopg.Connection[Any]
) -> None:
    runtime = ConsumerRuntime(
        JobsProjection(), engine, ConsumerConfig(bootstrap_servers="unused", group_id="jobs")
    )
    await store_events(
        engine,
        [
            square_event("booking.updated", entity_id="bkA", version=2),
            square_event("booking.updated", entity_id="bkA", version=5),
        ],
    )
    outcome = await runtime.apply_batch(published(outbox_rows(db), 0))
    assert (outcome.applied, outcome.stale) == (2, 1)
    assert [(o[1], o[3]) for o in outcomes(db)] == [
        ("stale", {"key": "bkA", "row_version": 5, "event_version": 2}),
        ("applied", None),
    ]


async def test_a_batch_superseded_by_a_row_newer_still_records_the_rows_version(
    engine: AsyncEngine, db: psycopg.Connection[Any]
) -> None:
    """A change the batch supersedes is claimed stale at once; when the row turns out to hold a
    newer version than the batch's, its record says so too, as its newer neighbour's does."""
    runtime = ConsumerRuntime(
        JobsProjection(), engine, ConsumerConfig(bootstrap_servers="unused", group_id="jobs")
    )
    await store_events(
        engine,
        [
            square_event("booking.updated", entity_id="bkA", version=9),
            square_event("booking.updated", entity_id="bkA", version=2),
            square_event("booking.updated", entity_id="bkA", version=5),
            square_event("booking.updated", entity_id="bkA", version=7),
        ],
    )
    v9, v2, v5, v7 = published(outbox_rows(db), 0)
    await runtime.apply_batch([v9])
    outcome = await runtime.apply_batch([v2, v5])  # v5 supersedes v2, but the row holds v9
    assert (outcome.applied, outcome.stale) == (2, 2)
    # v9 supersedes v7 in the batch, but as a duplicate it is not applied again.
    await runtime.apply_batch([v9, v7])
    assert [(o[1], o[3]) for o in outcomes(db)] == [
        ("applied", None),
        ("stale", {"key": "bkA", "row_version": 9, "event_version": 2}),
        ("stale", {"key": "bkA", "row_version": 9, "event_version": 5}),
        ("duplicate", None),
        ("stale", {"key": "bkA", "row_version": 9, "event_version": 7}),
    ]


async def test_admin_answers_the_journey_by_either_id_and_searches_by_entity(
    engine: AsyncEngine, database_url: str, db: psycopg.Connection[Any]
) -> None:
    body = square_event("booking.created", entity_id="bkJ", version=1)
    (event_id,) = await store_events(engine, [body])
    settings = Settings(DATABASE_URL=database_url, SLUICE_ADMIN_TOKEN=TOKEN)
    async with (
        running_server(create_admin_app(settings)) as url,
        httpx.AsyncClient(base_url=url, headers=AUTH) as client,
    ):
        waiting = (await client.get(f"/admin/events/{event_id}")).json()
        assert waiting["published"] is None
        assert [row["topic"] for row in waiting["outbox"]] == ["square.bookings"]

        runtime = ConsumerRuntime(
            JobsProjection(), engine, ConsumerConfig(bootstrap_servers="unused", group_id="jobs")
        )
        (message,) = published(outbox_rows(db), 41)
        await runtime.apply_batch([message])

        by_ours = (await client.get(f"/admin/events/{event_id}")).json()
        by_square = (await client.get(f"/admin/events/{body['event_id']}")).json()
        assert by_ours == by_square
        assert by_ours["event"]["id"] == str(event_id)
        assert by_ours["event"]["provider_event_id"] == body["event_id"]
        assert by_ours["event"]["headers"] == {"square-retry-number": "0"}
        assert by_ours["event"]["signature_key"] is None  # stored, not delivered
        assert (by_ours["repeats"], by_ours["repeats_total"]) == ([], 0)
        assert by_ours["published"] == {
            "topic": "square.bookings",
            "partition": 3,
            "offset": 41,
            "at": "2026-01-01T00:00:00+00:00",
        }
        (outcome,) = by_ours["outcomes"]
        assert (outcome["consumer"], outcome["outcome"], outcome["origin"]) == (
            "jobs",
            "applied",
            "delivered",
        )

        found = (await client.get("/admin/events", params={"entity": "bkJ"})).json()
        assert [(o["event_id"], o["outcome"]) for o in found["outcomes"]] == [
            (str(event_id), "applied")
        ]

        missing = await client.get("/admin/events/evt-nobody-sent")
        assert missing.status_code == 404
        assert missing.json()["error"] == "not_found"
        assert (await client.get("/admin/events")).status_code == 400
        assert (await client.get("/admin/events/" + "x" * 201)).status_code == 400
        assert (await client.get("/admin/events/a%00b")).status_code == 400
        async with httpx.AsyncClient(base_url=url) as anonymous:
            assert (await anonymous.get(f"/admin/events/{event_id}")).status_code == 401


async def test_journey_shows_the_key_that_verified_each_delivery_and_every_repeat(
    database_url: str,
) -> None:
    settings = Settings(
        DATABASE_URL=database_url,
        SQUARE_WEBHOOK_SIGNATURE_KEYS=f"{SIGNATURE_KEY},{ROTATED_KEY}",
        SQUARE_WEBHOOK_URL=WEBHOOK_URL,
        AIRTABLE_WEBHOOK_SECRETS=f"{HOOK}={MAC_SECRET}",
        SLUICE_ADMIN_TOKEN=TOKEN,
    )
    event = square_event("booking.created", entity_id="bkR", version=1)
    body, headers = signed_square_delivery(event, key=ROTATED_KEY, url=WEBHOOK_URL)
    ping, ping_headers = signed_airtable_ping(airtable_ping("appSLUICEjourney", HOOK), MAC_SECRET)
    async with (
        running_server(create_app(settings)) as ingest,
        running_server(create_admin_app(settings)) as admin,
        httpx.AsyncClient(base_url=ingest) as webhooks,
        httpx.AsyncClient(base_url=admin, headers=AUTH) as client,
    ):
        first = (await webhooks.post("/webhooks/square", content=body, headers=headers)).json()
        for retry, reason in ((1, "http_timeout"), (2, "http_error")):
            again = {
                **headers,
                "square-retry-number": str(retry),
                "square-retry-reason": reason,
            }
            answer = await webhooks.post("/webhooks/square", content=body, headers=again)
            assert answer.json() == {"id": first["id"], "duplicate": True}
        pinged = await webhooks.post("/webhooks/airtable", content=ping, headers=ping_headers)
        repinged = await webhooks.post("/webhooks/airtable", content=ping, headers=ping_headers)
        assert repinged.json() == {"id": pinged.json()["id"], "duplicate": True}

        journey = (await client.get(f"/admin/events/{event['event_id']}")).json()
        pings = (await client.get(f"/admin/events/{pinged.json()['id']}")).json()

    square_key = f"2:{sha256_prefix(ROTATED_KEY)}"
    signature = headers["x-square-hmacsha256-signature"]
    assert journey["event"]["id"] == first["id"]
    assert journey["event"]["signature_key"] == square_key
    assert journey["event"]["headers"]["x-square-hmacsha256-signature"] == signature
    assert journey["repeats_total"] == 2
    assert [
        (
            r["headers"]["square-retry-number"],
            r["headers"]["square-retry-reason"],
            r["headers"]["x-square-hmacsha256-signature"],
            r["signature_key"],
        )
        for r in journey["repeats"]
    ] == [("1", "http_timeout", signature, square_key), ("2", "http_error", signature, square_key)]
    first_at, second_at = (datetime.fromisoformat(r["received_at"]) for r in journey["repeats"])
    assert datetime.fromisoformat(journey["event"]["received_at"]) < first_at < second_at

    airtable_key = f"{HOOK}:{sha256_prefix(MAC_SECRET)}"
    assert pings["event"]["signature_key"] == airtable_key
    assert (
        pings["event"]["headers"]["x-airtable-content-mac"]
        == ping_headers["x-airtable-content-mac"]
    )
    assert [r["signature_key"] for r in pings["repeats"]] == [airtable_key]
    assert pings["repeats_total"] == 1


async def test_journey_lists_the_first_repeats_and_counts_them_all(
    engine: AsyncEngine, db: psycopg.Connection[Any]
) -> None:
    (event_id,) = await store_events(engine, [square_event("booking.created")])
    db.execute(
        "INSERT INTO delivery_repeats (event_id, received_at, headers, signature_key)"
        " SELECT %s, now() + make_interval(secs => n), jsonb_build_object('n', n::text), '1:abc'"
        " FROM generate_series(1, %s) AS n",
        (event_id, REPEATS_SHOWN + 5),
    )
    journey = await find_journey(engine, str(event_id))
    assert journey is not None
    assert journey["repeats_total"] == REPEATS_SHOWN + 5
    assert [r["headers"]["n"] for r in journey["repeats"]] == [
        str(n) for n in range(1, REPEATS_SHOWN + 1)
    ]


def test_the_document_bounds_the_repeats_as_the_journey_does() -> None:
    journey = openapi_document()["components"]["schemas"]["Journey"]
    assert journey["properties"]["repeats"]["maxItems"] == REPEATS_SHOWN
