"""Honest sync state: a lead whose push skipped a field because Airtable changed it later says
`conflict` until staff resolve it, keeping the app's value (pushed again) or adopting Airtable's;
a failed lead can be retried on demand; both are audited. A real PostgreSQL and server."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from tests.support.api import api_client, insert_lead, key
from tests.support.rows import scalar

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import httpx

    from tests.support.api import Conn


@pytest.fixture
async def api(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(database_url) as client:
        yield client


def in_conflict(db: Conn) -> str:
    """A lead whose notes the pusher skipped: the app wrote one value, Airtable holds another,
    changed after the app's; the claim went through."""
    lead = insert_lead(db)
    db.execute(
        "UPDATE leads SET notes = 'from the app', claimed_by = 'amy' WHERE record_id = %s", (lead,)
    )
    db.execute(
        "INSERT INTO lead_sync_fields (record_id, column_name, app_changed_at,"
        " pushed_app_changed_at, airtable_changed_at, airtable_value) VALUES"
        " (%s, 'notes', now() - interval '2 min', now() - interval '2 min',"
        "  now() - interval '1 min', '\"from Airtable\"'),"
        " (%s, 'claimed_by', now() - interval '2 min', now() - interval '2 min', NULL, NULL)",
        (lead, lead),
    )
    db.execute(
        "INSERT INTO sync_conflicts (record_id, column_name, app_value, app_changed_at,"
        " airtable_value, airtable_changed_at) VALUES (%s, 'notes', '\"from the app\"',"
        " now() - interval '2 min', '\"from Airtable\"', now() - interval '1 min')",
        (lead,),
    )
    db.execute("INSERT INTO lead_sync (record_id, status) VALUES (%s, 'conflict')", (lead,))
    return lead


async def post(api: httpx.AsyncClient, path: str, body: dict[str, Any]) -> httpx.Response:
    return await api.post(path, json=body, headers={"X-Idempotency-Key": key()})


async def test_a_conflict_shows_until_airtables_value_is_adopted(
    api: httpx.AsyncClient, db: Conn
) -> None:
    lead = in_conflict(db)
    shown = (await api.get(f"/api/leads/{lead}")).json()
    assert shown["sync"]["status"] == "conflict"
    assert [c["column_name"] for c in shown["conflicts"]] == ["notes"]
    answer = await post(api, f"/api/leads/{lead}/resolve", {"actor": "bob", "keep": "airtable"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["notes"] == "from Airtable"
    assert answer.json()["claimed_by"] == "amy"  # only the conflicting column adopted
    assert answer.json()["sync"]["status"] == "synced"
    assert scalar(db, "SELECT notes FROM leads WHERE record_id = %s", lead) == "from Airtable"
    resolved = db.execute("SELECT resolved_by, resolution FROM sync_conflicts").fetchone()
    assert resolved == ("bob", "airtable")
    audit = db.execute("SELECT actor, action, target, detail FROM audit_log").fetchall()
    assert audit == [
        (
            "api:bob",
            "lead.resolve_conflict",
            f"lead:{lead}",
            {"keep": "airtable", "columns": ["notes"]},
        )
    ]
    # Nothing of the app's is owed to Airtable for notes any more.
    owed = (
        "SELECT app_changed_at > pushed_app_changed_at FROM lead_sync_fields"
        " WHERE record_id = %s AND column_name = 'notes'"
    )
    assert scalar(db, owed, lead) is False
    again = await post(api, f"/api/leads/{lead}/resolve", {"actor": "bob", "keep": "app"})
    assert again.status_code == 409
    assert again.json()["error"] == "no_conflict"


async def test_keeping_the_apps_value_asks_for_its_push_again(
    api: httpx.AsyncClient, db: Conn
) -> None:
    lead = in_conflict(db)
    answer = await post(
        api, f"/api/leads/{lead}/resolve", {"actor": "amy", "keep": "app", "columns": ["notes"]}
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["notes"] == "from the app"
    assert answer.json()["sync"]["status"] == "pending"
    owed = (
        "SELECT app_changed_at > airtable_changed_at FROM lead_sync_fields"
        " WHERE record_id = %s AND column_name = 'notes'"
    )
    assert scalar(db, owed, lead) is True  # now later than Airtable's edit: the pusher sends it
    assert scalar(db, "SELECT resolution FROM sync_conflicts") == "app"


@pytest.mark.parametrize(
    "body",
    [
        {"actor": "a", "keep": "neither"},
        {"actor": "a"},
        {"actor": "a", "keep": "app", "columns": []},
    ],
)
async def test_a_bad_resolution_is_a_422_and_changes_nothing(
    api: httpx.AsyncClient, db: Conn, body: dict[str, Any]
) -> None:
    lead = in_conflict(db)
    answer = await post(api, f"/api/leads/{lead}/resolve", body)
    assert answer.status_code in (409, 422), answer.text
    assert scalar(db, "SELECT resolved_at FROM sync_conflicts") is None
    assert scalar(db, "SELECT status FROM lead_sync") == "conflict"


async def test_a_failed_lead_is_retried_on_demand(api: httpx.AsyncClient, db: Conn) -> None:
    lead = insert_lead(db)
    db.execute(
        "INSERT INTO lead_sync (record_id, status, attempts, last_error, next_attempt_at)"
        " VALUES (%s, 'failed', 3, 'INVALID_VALUE_FOR_COLUMN', NULL)",
        (lead,),
    )
    answer = await post(api, f"/api/leads/{lead}/retry", {"actor": "amy"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["sync"]["status"] == "pending"
    assert scalar(db, "SELECT next_attempt_at <= now() FROM lead_sync") is True
    assert scalar(db, "SELECT action FROM audit_log") == "lead.retry_push"
    again = await post(api, f"/api/leads/{lead}/retry", {"actor": "amy"})
    assert again.status_code == 409
    assert again.json()["error"] == "not_failed"
