"""The App API on a real PostgreSQL: auth, transitions, ownership, idempotency, ETags, SSE."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from api.app import routes
from api.openapi import openapi_document
from tests.support.api import api_client, insert_job, insert_lead, key
from tests.support.proxy import database_behind_proxy
from tests.support.rows import scalar

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from tests.support.api import Conn


@pytest.fixture
async def api(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(database_url) as client:
        yield client


def outbox(db: Conn) -> list[dict[str, Any]]:
    rows = db.execute("SELECT topic, key, payload FROM outbox ORDER BY id").fetchall()
    return [{"topic": t, "key": k, "payload": p} for t, k, p in rows]


async def patch(
    api: httpx.AsyncClient, path: str, body: dict[str, Any], k: str | None = None
) -> httpx.Response:
    return await api.patch(path, json=body, headers={"X-Idempotency-Key": k or key()})


async def test_bearer_token_is_required(api: httpx.AsyncClient, db: Conn) -> None:
    job = insert_job(db)
    bare = httpx.AsyncClient(base_url=str(api.base_url))
    wrong = {"Authorization": "Bearer nope"}
    change = {"X-Idempotency-Key": key()}
    async with bare:
        refused = [
            await bare.get(f"/api/jobs/{job}"),
            await bare.get(f"/api/jobs/{job}", headers=wrong),
            await bare.patch(f"/api/jobs/{job}", json={"actor": "a", "notes": "x"}, headers=change),
        ]
        assert [r.status_code for r in refused] == [401, 401, 401]
        assert all(r.headers["www-authenticate"].startswith("Bearer") for r in refused)
        assert "id" not in refused[0].text  # no row leaked to a stranger
        assert (await bare.get("/api/openapi.json")).status_code == 200
    assert scalar(db, "SELECT notes FROM jobs WHERE booking_id = %s", job) is None
    assert scalar(db, "SELECT count(*) FROM idempotency_keys") == 0
    assert (await api.get(f"/api/jobs/{job}")).json()["booking_id"] == job


async def test_allowed_transition_is_recorded_with_who_and_when(
    api: httpx.AsyncClient, db: Conn
) -> None:
    job = insert_job(db)
    response = await patch(api, f"/api/jobs/{job}", {"actor": "amy", "work_status": "en_route"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["work_status"] == "en_route"
    (entry,) = body["status_history"]
    assert entry["from"] == "scheduled"
    assert entry["to"] == "en_route"
    assert entry["by"] == "amy"
    assert entry["at"]
    (message,) = outbox(db)
    assert message["topic"] == "app.changes"
    assert message["key"] == f"jobs/{job}"
    assert message["payload"]["data"]["columns"] == ["work_status", "status_history"]


async def test_refused_transition_changes_nothing(api: httpx.AsyncClient, db: Conn) -> None:
    job = insert_job(db)
    response = await patch(api, f"/api/jobs/{job}", {"actor": "amy", "work_status": "completed"})
    assert response.status_code == 409
    assert response.json()["allowed"] == ["cancelled", "en_route", "in_progress", "no_show"]
    assert scalar(db, "SELECT work_status FROM jobs WHERE booking_id = %s", job) == "scheduled"
    assert outbox(db) == []


async def test_staff_fields_are_written(api: httpx.AsyncClient, db: Conn) -> None:
    job = insert_job(db)
    body = {
        "actor": "amy",
        "checklist": [{"item": "vacuum", "done": True}],
        "notes": "gate code 1234",
        "photos_meta": [{"url": "https://img.example.com/1.jpg"}],
        "payment": {"method": "card", "amount_cents": 12000},
        "vehicle_info": {"make": "Volvo", "year": 2019},
        "post_completion_issue": None,
    }
    response = await patch(api, f"/api/jobs/{job}", body)
    assert response.status_code == 200, response.text
    row = db.execute(
        "SELECT checklist, notes, photos_meta, payment, vehicle_info FROM jobs"
        " WHERE booking_id = %s",
        (job,),
    ).fetchone()
    assert row == (
        [{"item": "vacuum", "done": True}],
        "gate code 1234",
        [{"url": "https://img.example.com/1.jpg", "caption": None, "taken_at": None}],
        {
            "method": "card",
            "amount_cents": 12000,
            "currency": "USD",
            "paid_at": None,
            "reference": None,
        },
        {"make": "Volvo", "model": None, "year": 2019, "color": None, "plate": None, "vin": None},
    )


async def test_source_owned_columns_are_refused_by_name(api: httpx.AsyncClient, db: Conn) -> None:
    job = insert_job(db)
    lead = insert_lead(db)
    body = {"actor": "amy", "notes": "x", "status": "CANCELLED", "customer_name": "Bob"}
    response = await patch(api, f"/api/jobs/{job}", body)
    assert response.status_code == 422
    assert response.json()["columns"] == ["customer_name", "status"]
    response = await patch(api, f"/api/leads/{lead}", {"actor": "amy", "email": "x@example.com"})
    assert response.status_code == 422
    assert response.json()["columns"] == ["email"]
    assert outbox(db) == []


async def test_unknown_ids_are_404(api: httpx.AsyncClient, db: Conn) -> None:
    answers = [
        await api.get("/api/jobs/nope"),
        await patch(api, "/api/jobs/nope", {"actor": "a", "notes": "x"}),
        await api.get("/api/leads/nope"),
        await api.post(
            "/api/leads/nope/claim", json={"actor": "a"}, headers={"X-Idempotency-Key": key()}
        ),
    ]
    assert [(r.status_code, r.json()["error"]) for r in answers] == [(404, "not_found")] * 4
    assert scalar(db, "SELECT count(*) FROM outbox") == 0


async def test_bulk_status_is_all_or_nothing(api: httpx.AsyncClient, db: Conn) -> None:
    jobs = [insert_job(db), insert_job(db), insert_job(db, work_status="completed")]
    body = {"actor": "amy", "ids": jobs, "work_status": "en_route"}
    refused = await api.post("/api/jobs/status", json=body, headers={"X-Idempotency-Key": key()})
    assert refused.status_code == 409
    assert [r["id"] for r in refused.json()["refused"]] == [jobs[2]]
    statuses = db.execute("SELECT work_status FROM jobs ORDER BY booking_id").fetchall()
    assert sorted(s for (s,) in statuses) == ["completed", "scheduled", "scheduled"]
    assert outbox(db) == []

    body["ids"] = [*jobs[:2], "missing"]
    missing = await api.post("/api/jobs/status", json=body, headers={"X-Idempotency-Key": key()})
    assert missing.status_code == 404
    assert missing.json()["ids"] == ["missing"]

    body["ids"] = jobs[:2]
    done = await api.post("/api/jobs/status", json=body, headers={"X-Idempotency-Key": key()})
    assert done.status_code == 200, done.text
    assert sorted(done.json()["changed"]) == sorted(jobs[:2])
    assert len(outbox(db)) == 2


async def test_fifty_concurrent_repeats_have_one_effect(api: httpx.AsyncClient, db: Conn) -> None:
    job = insert_job(db)
    k = key()
    body = {"actor": "amy", "work_status": "en_route", "notes": "on my way"}
    responses = await asyncio.gather(*(patch(api, f"/api/jobs/{job}", body, k) for _ in range(50)))
    assert {r.status_code for r in responses} == {200}
    assert len({r.content for r in responses}) == 1
    assert sum(r.headers.get("idempotent-replayed") == "true" for r in responses) == 49
    history = scalar(db, "SELECT status_history FROM jobs WHERE booking_id = %s", job)
    assert len(history) == 1
    assert len(outbox(db)) == 1

    other = await patch(api, f"/api/jobs/{job}", {"actor": "amy", "notes": "changed"}, k)
    assert other.status_code == 422
    assert other.json()["error"] == "idempotency_key_reused"


async def test_refusals_are_replayed_too_and_keys_expire(api: httpx.AsyncClient, db: Conn) -> None:
    job = insert_job(db)
    k = key()
    body = {"actor": "amy", "work_status": "completed"}
    first = await patch(api, f"/api/jobs/{job}", body, k)
    assert first.status_code == 409
    db.execute("UPDATE jobs SET work_status = 'in_progress' WHERE booking_id = %s", (job,))
    again = await patch(api, f"/api/jobs/{job}", body, k)
    assert again.status_code == 409  # the first answer, not a second attempt
    assert again.content == first.content
    assert again.headers["idempotent-replayed"] == "true"
    assert scalar(db, "SELECT work_status FROM jobs WHERE booking_id = %s", job) == "in_progress"
    db.execute("UPDATE idempotency_keys SET expires_at = now() - interval '1 second'")
    after_expiry = await patch(api, f"/api/jobs/{job}", body, k)
    assert after_expiry.status_code == 200
    assert after_expiry.json()["work_status"] == "completed"


async def test_missing_idempotency_key_is_refused(api: httpx.AsyncClient, db: Conn) -> None:
    job = insert_job(db)
    response = await api.patch(f"/api/jobs/{job}", json={"actor": "a", "notes": "x"})
    assert (response.status_code, response.json()["error"]) == (400, "idempotency_key_required")
    assert "X-Idempotency-Key" in response.json()["detail"]
    assert scalar(db, "SELECT notes FROM jobs WHERE booking_id = %s", job) is None


async def test_nul_characters_and_oversized_bodies_are_refused_without_a_write(
    api: httpx.AsyncClient, db: Conn
) -> None:
    job = insert_job(db)
    body = {"actor": "amy\u0000", "ids": [job], "work_status": "en_route"}
    nul = await api.post("/api/jobs/status", json=body, headers={"X-Idempotency-Key": key()})
    assert nul.status_code == 422
    assert "NUL" in nul.json()["detail"]
    huge = await patch(api, f"/api/jobs/{job}", {"actor": "amy", "notes": "x" * 2_000_000})
    assert huge.status_code == 413
    assert scalar(db, "SELECT work_status FROM jobs WHERE booking_id = %s", job) == "scheduled"
    assert scalar(db, "SELECT notes FROM jobs WHERE booking_id = %s", job) is None
    assert outbox(db) == []
    assert (await api.get("/api/jobs/a%00b")).status_code == 404
    claim = await api.post(
        "/api/leads/a%00b/claim", json={"actor": "amy"}, headers={"X-Idempotency-Key": key()}
    )
    assert claim.status_code == 404
    assert outbox(db) == []


async def test_unchanged_reads_answer_304(api: httpx.AsyncClient, db: Conn) -> None:
    job = insert_job(db)
    lead = insert_lead(db)
    for path in (f"/api/jobs/{job}", "/api/jobs", f"/api/leads/{lead}", "/api/leads"):
        first = await api.get(path)
        assert first.status_code == 200
        tag = first.headers["etag"]
        unchanged = await api.get(path, headers={"If-None-Match": tag})
        assert unchanged.status_code == 304
        assert unchanged.content == b""
    assert (await patch(api, f"/api/jobs/{job}", {"actor": "a", "notes": "n"})).status_code == 200
    changed = await api.get(f"/api/jobs/{job}", headers={"If-None-Match": tag})
    assert changed.status_code == 200


async def test_jobs_window(api: httpx.AsyncClient, db: Conn) -> None:
    early = insert_job(
        db,
        start_at=datetime(2030, 1, 1, 9, tzinfo=UTC),
    )
    insert_job(
        db,
        start_at=datetime(2030, 1, 3, 9, tzinfo=UTC),
    )
    response = await api.get("/api/jobs", params={"from": "2030-01-01", "to": "2030-01-02"})
    assert [j["booking_id"] for j in response.json()["jobs"]] == [early]
    assert (await api.get("/api/jobs", params={"from": "2030-01-01T00:00:00"})).status_code == 400


async def test_claim_unclaim_and_notes_mark_the_lead_pending(
    api: httpx.AsyncClient, db: Conn
) -> None:
    lead = insert_lead(db)
    headers = {"X-Idempotency-Key": key()}
    claimed = await api.post(f"/api/leads/{lead}/claim", json={"actor": "amy"}, headers=headers)
    assert claimed.status_code == 200, claimed.text
    assert claimed.json()["claimed_by"] == "amy"
    assert claimed.json()["sync"]["status"] == "pending"
    taken = await api.post(
        f"/api/leads/{lead}/claim", json={"actor": "bob"}, headers={"X-Idempotency-Key": key()}
    )
    assert taken.status_code == 409
    not_yours = await api.post(
        f"/api/leads/{lead}/unclaim", json={"actor": "bob"}, headers={"X-Idempotency-Key": key()}
    )
    assert not_yours.status_code == 409
    notes = await patch(api, f"/api/leads/{lead}", {"actor": "amy", "notes": "call back"})
    assert notes.json()["notes"] == "call back"
    released = await api.post(
        f"/api/leads/{lead}/unclaim", json={"actor": "amy"}, headers={"X-Idempotency-Key": key()}
    )
    assert released.json()["claimed_by"] is None
    fields = db.execute(
        "SELECT column_name FROM lead_sync_fields WHERE app_changed_at IS NOT NULL ORDER BY 1"
    ).fetchall()
    assert [f for (f,) in fields] == ["claimed_at", "claimed_by", "notes"]
    assert [m["key"] for m in outbox(db)] == [f"leads/{lead}"] * 3


def test_every_route_is_documented() -> None:
    documented = {
        (path, method.upper())
        for path, operations in openapi_document()["paths"].items()
        for method in operations
    }
    served = {
        (r.path, m)
        for r in routes()
        for m in (r.methods or ())
        if m != "HEAD" and r.path.startswith("/api")
    }
    assert served == documented


async def _events(response: httpx.Response) -> AsyncIterator[dict[str, str]]:
    event: dict[str, str] = {}
    async for line in response.aiter_lines():
        if not line:
            if "data" in event:
                yield event
            event = {}
            continue
        name, _, value = line.partition(":")
        event[name] = value.removeprefix(" ")


async def _next_change(events: AsyncIterator[dict[str, str]], key_: str) -> dict[str, str]:
    async for event in events:
        if event.get("event") == "change" and json.loads(event["data"])["key"] == key_:
            return event
    raise AssertionError("stream ended")


async def test_changes_stream_within_a_second_and_resumes(api: httpx.AsyncClient, db: Conn) -> None:
    job = insert_job(db)
    async with api.stream("GET", "/api/changes") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        events = _events(stream)
        await asyncio.sleep(0.2)
        started = time.monotonic()
        assert (
            await patch(api, f"/api/jobs/{job}", {"actor": "a", "notes": "one"})
        ).status_code == 200
        first = await asyncio.wait_for(_next_change(events, job), 5)
        latency = time.monotonic() - started
        await events.aclose()  # type: ignore[attr-defined]
    assert latency < 1.0
    assert json.loads(first["data"])["row"]["notes"] == "one"

    # While disconnected: an API change and a consumer-style write straight to the table.
    assert (await patch(api, f"/api/jobs/{job}", {"actor": "a", "notes": "two"})).status_code == 200
    db.execute("UPDATE jobs SET status = 'CANCELLED' WHERE booking_id = %s", (job,))
    headers = {"Last-Event-ID": first["id"]}
    async with api.stream("GET", "/api/changes", headers=headers) as stream:
        events = _events(stream)
        second = await asyncio.wait_for(_next_change(events, job), 5)
        third = await asyncio.wait_for(_next_change(events, job), 5)
        await events.aclose()  # type: ignore[attr-defined]
    assert int(second["id"]) > int(first["id"])
    assert json.loads(second["data"])["row"]["notes"] == "two"
    assert json.loads(third["data"])["row"]["status"] == "CANCELLED"


async def test_a_database_outage_is_503_for_reads_and_changes(database_url: str, db: Conn) -> None:
    job = insert_job(db)
    lead = insert_lead(db)
    async with (
        database_behind_proxy(database_url) as (via_proxy, proxy),
        api_client(via_proxy) as api,
    ):
        assert (await api.get(f"/api/jobs/{job}")).status_code == 200
        await proxy.cut()
        answers = [
            await api.get("/api/jobs"),
            await api.get(f"/api/jobs/{job}"),
            await api.get(f"/api/leads/{lead}"),
            await patch(api, f"/api/jobs/{job}", {"notes": "during", "actor": "amy"}),
        ]
        assert [(r.status_code, r.json()["error"]) for r in answers] == [(503, "unavailable")] * 4
        assert all(r.headers["retry-after"] == "2" for r in answers)

        await proxy.restore()
        after = await patch(api, f"/api/jobs/{job}", {"notes": "after", "actor": "amy"})
        assert after.status_code == 200, after.text
    assert scalar(db, "SELECT notes FROM jobs WHERE booking_id = %s", job) == "after"


async def _changes(events: AsyncIterator[dict[str, str]], count: int) -> list[tuple[str, str]]:
    """(entity, key) of the next `count` change events, and of any reset on the way."""
    seen: list[tuple[str, str]] = []
    async for event in events:
        if event.get("event") == "reset":
            seen.append(("reset", ""))
        if event.get("event") == "change":
            data = json.loads(event["data"])
            seen.append((data["entity"], data["key"]))
            if len([s for s in seen if s[0] != "reset"]) == count:
                return seen
    raise AssertionError("stream ended")


async def test_the_change_stream_narrows_to_a_table_or_a_row_and_replays_from_zero(
    api: httpx.AsyncClient, db: Conn
) -> None:
    one, two = insert_job(db), insert_job(db)
    lead = insert_lead(db)
    db.execute("UPDATE jobs SET notes = 'n' WHERE booking_id = %s", (one,))
    db.execute("UPDATE leads SET notes = 'n' WHERE record_id = %s", (lead,))
    db.execute("UPDATE jobs SET notes = 'n' WHERE booking_id = %s", (two,))
    # From the start of the log, everything, in order, and no reset.
    async with api.stream("GET", "/api/changes", headers={"Last-Event-ID": "0"}) as stream:
        events = _events(stream)
        everything = await asyncio.wait_for(_changes(events, 6), 5)
        await events.aclose()  # type: ignore[attr-defined]
    assert ("reset", "") not in everything
    assert everything == [
        ("jobs", one),
        ("jobs", two),
        ("leads", lead),
        ("jobs", one),
        ("leads", lead),
        ("jobs", two),
    ]
    narrow = {"Last-Event-ID": "0"}
    async with api.stream("GET", f"/api/changes?entity=jobs&key={two}", headers=narrow) as stream:
        events = _events(stream)
        row = await asyncio.wait_for(_changes(events, 2), 5)
        # Its next change is the row's second one, however much else changed between.
        db.execute("UPDATE jobs SET notes = 'm' WHERE booking_id = %s", (one,))
        db.execute("UPDATE jobs SET notes = 'm' WHERE booking_id = %s", (two,))
        later = await asyncio.wait_for(_changes(events, 1), 5)
        await events.aclose()  # type: ignore[attr-defined]
    assert row == [("jobs", two), ("jobs", two)]  # its insert and its update
    assert later == [("jobs", two)]
    async with api.stream("GET", "/api/changes?entity=leads", headers=narrow) as stream:
        events = _events(stream)
        leads = await asyncio.wait_for(_changes(events, 2), 5)
        await events.aclose()  # type: ignore[attr-defined]
    assert leads == [("leads", lead), ("leads", lead)]


@pytest.mark.parametrize(
    ("query", "detail"),
    [
        ("entity=customers", "entity: choose one of jobs, leads"),
        ("key=bk1", "key: give entity too"),
    ],
)
async def test_a_bad_narrowing_is_a_400(api: httpx.AsyncClient, query: str, detail: str) -> None:
    answer = await api.get(f"/api/changes?{query}")
    assert answer.status_code == 400
    assert answer.json()["parameter"] == query.split("=", maxsplit=1)[0]
    assert detail in answer.json()["detail"]
