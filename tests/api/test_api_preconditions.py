"""No lost updates between two staff members: every read and write answers the row's strong
ETag, and a change with an If-Match that no longer matches answers 412 with the current row and
changes nothing. On a real PostgreSQL through the real server."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import pytest

from tests.support.api import api_client, insert_job, insert_lead, key
from tests.support.rows import scalar

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import httpx

    from tests.support.api import Conn


@pytest.fixture
async def api(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(database_url) as client:
        yield client


def change(if_match: str | None = None) -> dict[str, str]:
    headers = {"X-Idempotency-Key": key()}
    if if_match is not None:
        headers["If-Match"] = if_match
    return headers


async def test_two_staff_edits_from_one_read_one_wins_the_other_gets_412(
    api: httpx.AsyncClient, db: Conn
) -> None:
    job = insert_job(db)
    read = await api.get(f"/api/jobs/{job}")
    tag = read.headers["etag"]
    bodies: list[dict[str, Any]] = [
        {"actor": "amy", "notes": "amy's note"},
        {"actor": "bob", "notes": "bob's note"},
    ]
    answers = await asyncio.gather(
        *(api.patch(f"/api/jobs/{job}", json=b, headers=change(tag)) for b in bodies)
    )
    assert sorted(a.status_code for a in answers) == [200, 412]
    won = next(a for a in answers if a.status_code == 200)
    lost = next(a for a in answers if a.status_code == 412)
    assert lost.json()["error"] == "precondition_failed"
    assert lost.json()["current"]["notes"] == won.json()["notes"]
    assert lost.headers["etag"] == won.headers["etag"] != tag
    notes = scalar(db, "SELECT notes FROM jobs WHERE booking_id = %s", job)
    assert notes == won.json()["notes"]
    assert scalar(db, "SELECT count(*) FROM outbox") == 1  # one change announced
    # The winner's ETag is the row's: a read agrees, and a change from it goes through.
    again = await api.get(f"/api/jobs/{job}")
    assert again.headers["etag"] == won.headers["etag"]
    third = await api.patch(
        f"/api/jobs/{job}",
        json={"actor": "cy", "notes": "third"},
        headers=change(again.headers["etag"]),
    )
    assert third.status_code == 200


async def test_a_source_change_makes_a_staff_edit_from_an_older_read_412(
    api: httpx.AsyncClient, db: Conn
) -> None:
    job = insert_job(db)
    tag = (await api.get(f"/api/jobs/{job}")).headers["etag"]
    db.execute("UPDATE jobs SET status = 'CANCELLED_BY_CUSTOMER' WHERE booking_id = %s", (job,))
    late = await api.patch(
        f"/api/jobs/{job}", json={"actor": "amy", "work_status": "en_route"}, headers=change(tag)
    )
    assert late.status_code == 412
    assert late.json()["current"]["status"] == "CANCELLED_BY_CUSTOMER"
    assert scalar(db, "SELECT work_status FROM jobs WHERE booking_id = %s", job) == "scheduled"
    weak = await api.patch(
        f"/api/jobs/{job}",
        json={"actor": "amy", "notes": "x"},
        headers=change("W/" + late.headers["etag"]),
    )
    assert weak.status_code == 412  # strong comparison: a weak tag never matches
    anything = await api.patch(
        f"/api/jobs/{job}", json={"actor": "amy", "notes": "x"}, headers=change("*")
    )
    assert anything.status_code == 200


async def test_a_replay_answers_byte_for_byte_with_the_same_etag(
    api: httpx.AsyncClient, db: Conn
) -> None:
    job = insert_job(db)
    tag = (await api.get(f"/api/jobs/{job}")).headers["etag"]
    headers = change(tag)
    first = await api.patch(f"/api/jobs/{job}", json={"actor": "a", "notes": "n"}, headers=headers)
    replay = await api.patch(f"/api/jobs/{job}", json={"actor": "a", "notes": "n"}, headers=headers)
    assert first.status_code == replay.status_code == 200
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.content == first.content
    assert replay.headers["etag"] == first.headers["etag"]
    # The same key with another If-Match is another request.
    other = dict(headers, **{"If-Match": '"other"'})
    reused = await api.patch(f"/api/jobs/{job}", json={"actor": "a", "notes": "n"}, headers=other)
    assert reused.status_code == 422
    assert reused.json()["error"] == "idempotency_key_reused"


async def test_leads_claims_and_notes_take_if_match_too(api: httpx.AsyncClient, db: Conn) -> None:
    lead = insert_lead(db)
    read = await api.get(f"/api/leads/{lead}")
    tag = read.headers["etag"]
    claimed = await api.post(f"/api/leads/{lead}/claim", json={"actor": "amy"}, headers=change(tag))
    assert claimed.status_code == 200
    assert claimed.headers["etag"] != tag
    assert claimed.headers["etag"] == (await api.get(f"/api/leads/{lead}")).headers["etag"]
    stale = await api.patch(
        f"/api/leads/{lead}", json={"actor": "bob", "notes": "mine"}, headers=change(tag)
    )
    assert stale.status_code == 412
    assert stale.json()["current"]["claimed_by"] == "amy"
    assert scalar(db, "SELECT notes FROM leads WHERE record_id = %s", lead) is None


async def test_a_deployment_can_require_if_match(database_url: str, db: Conn) -> None:
    job = insert_job(db)
    async with api_client(database_url, SLUICE_API_REQUIRE_IF_MATCH="true") as api:
        bare = await api.patch(
            f"/api/jobs/{job}", json={"actor": "a", "notes": "n"}, headers=change()
        )
        assert bare.status_code == 428
        assert bare.json()["error"] == "if_match_required"
        assert scalar(db, "SELECT count(*) FROM idempotency_keys") == 0
        tag = (await api.get(f"/api/jobs/{job}")).headers["etag"]
        ok = await api.patch(
            f"/api/jobs/{job}", json={"actor": "a", "notes": "n"}, headers=change(tag)
        )
        assert ok.status_code == 200
        # Many rows, no one version: the bulk status change needs none.
        bulk = await api.post(
            "/api/jobs/status",
            json={"actor": "a", "ids": [job], "work_status": "en_route"},
            headers=change(),
        )
        assert bulk.status_code == 200
