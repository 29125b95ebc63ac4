from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import psycopg
import pytest
from typer.testing import CliRunner

from commands.main import app
from consumers.airtable_fetcher import AirtableFetcher, Ping
from ingest.airtable_fetch import fetch_page, fetch_webhook
from ingest.airtable_webhooks import (
    create_webhook,
    delete_webhook,
    list_webhooks,
    refresh_all,
)
from providers.airtable import AirtableUnavailableError
from schemas.airtable import RecordChange
from sluice.db import DatabaseUnavailableError, transaction
from tests.support.airtable import (
    Airtable,
    Conn,
    apply_each,
    fetched_changes,
    lead,
    register,
)
from tests.support.services import libpq_url

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from devkit.fakes.airtable import RecordedRequest


def add_leads(airtable: Airtable, count: int) -> list[str]:
    """`count` base transactions, each creating one lead."""
    return [
        airtable.fake.create_records(
            airtable.base.id, "Leads", [{"Full Name": f"Lead {i}", "SMS Sent Count": i}]
        )[0]
        for i in range(count)
    ]


def events(db: Conn) -> list[tuple[str, str, str]]:
    return [
        (r[0], r[1], r[2])
        for r in db.execute(
            "SELECT provider_event_id, event_type, entity_id FROM inbound_events ORDER BY 1"
        )
    ]


def cursor(db: Conn, webhook_id: str) -> int:
    row = db.execute(
        "SELECT cursor FROM airtable_webhooks WHERE webhook_id = %s", (webhook_id,)
    ).fetchone()
    assert row is not None
    return int(row[0])


async def test_changes_become_events_and_outbox_rows_with_the_cursor(
    airtable: Airtable, engine: AsyncEngine, db: Conn
) -> None:
    await register(engine, airtable)
    [kept, gone] = airtable.fake.create_records(
        airtable.base.id, "Leads", [{"Full Name": "Ada"}, {"Full Name": "Grace"}]
    )
    airtable.fake.update_records(airtable.base.id, "Leads", {kept: {"Company": "ACME"}})
    airtable.fake.destroy_records(airtable.base.id, "Leads", [gone])

    result = await fetch_webhook(engine, airtable.client(), airtable.webhook.id)

    assert (result.pages, result.payloads, result.changes, result.recorded) == (1, 3, 4, 4)
    assert cursor(db, airtable.webhook.id) == 4
    key = f"{airtable.base.id}/{airtable.table.id}"
    hook = airtable.webhook.id
    assert events(db) == sorted(
        [
            (
                f"{hook}:1:{airtable.table.id}:{kept}:created",
                "airtable.record.created",
                f"{key}/{kept}",
            ),
            (
                f"{hook}:1:{airtable.table.id}:{gone}:created",
                "airtable.record.created",
                f"{key}/{gone}",
            ),
            (
                f"{hook}:2:{airtable.table.id}:{kept}:changed",
                "airtable.record.changed",
                f"{key}/{kept}",
            ),
            (
                f"{hook}:3:{airtable.table.id}:{gone}:destroyed",
                "airtable.record.destroyed",
                f"{key}/{gone}",
            ),
        ]
    )
    outbox = db.execute("SELECT topic, key, payload FROM outbox ORDER BY id").fetchall()
    assert [(t, k) for t, k, _ in outbox] == [
        ("airtable.records", f"{key}/{kept}"),
        ("airtable.records", f"{key}/{gone}"),
        ("airtable.records", f"{key}/{kept}"),
        ("airtable.records", f"{key}/{gone}"),
    ]
    changed = RecordChange.model_validate(outbox[2][2]["data"])
    company = airtable.table.field("Company").id
    assert (changed.action, changed.cells, changed.base_transaction_number) == (
        "changed",
        {company: "ACME"},
        2,
    )
    assert changed.change_source == "client"


async def test_pages_follow_might_have_more(
    airtable: Airtable, engine: AsyncEngine, db: Conn
) -> None:
    await register(engine, airtable)
    add_leads(airtable, 120)

    result = await fetch_webhook(engine, airtable.client(), airtable.webhook.id)

    assert (result.pages, result.payloads, result.recorded, result.more) == (3, 120, 120, False)
    assert cursor(db, airtable.webhook.id) == 121
    pages = airtable.fake.requests_for(airtable.base.id, "/payloads")
    assert [p.status for p in pages] == [200, 200, 200]
    # Later changes are fetched from where the cursor stopped.
    add_leads(airtable, 2)
    again = await fetch_webhook(engine, airtable.client(), airtable.webhook.id)
    assert (again.payloads, again.recorded) == (2, 2)
    assert len(events(db)) == 122


async def test_fetching_the_same_payloads_again_stores_nothing_twice(
    airtable: Airtable, engine: AsyncEngine, db: Conn
) -> None:
    await register(engine, airtable)
    add_leads(airtable, 5)
    await fetch_webhook(engine, airtable.client(), airtable.webhook.id)
    db.execute("UPDATE airtable_webhooks SET cursor = 1")

    repeat = await fetch_webhook(engine, airtable.client(), airtable.webhook.id)

    assert (repeat.changes, repeat.recorded) == (5, 0)
    assert len(events(db)) == 5
    assert db.execute("SELECT count(*) FROM outbox").fetchone() == (5,)


async def test_crash_between_fetch_and_commit_loses_and_repeats_nothing(
    airtable: Airtable, engine: AsyncEngine, db: Conn, database_url: str
) -> None:
    await register(engine, airtable)
    add_leads(airtable, 3)

    def kill_fetcher(request: RecordedRequest) -> None:
        # The page has been fetched; the fetcher's transaction has not committed: kill it.
        if "/payloads" in request.path:
            with psycopg.connect(libpq_url(database_url), autocommit=True) as admin:
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = 'sluice-test' AND pid <> pg_backend_pid()"
                )

    airtable.fake.on_request = kill_fetcher
    with pytest.raises(DatabaseUnavailableError):
        await fetch_page(engine, airtable.client(), airtable.webhook.id)
    assert events(db) == []
    assert db.execute("SELECT count(*) FROM outbox").fetchone() == (0,)
    assert cursor(db, airtable.webhook.id) == 1

    airtable.fake.on_request = None
    add_leads(airtable, 1)
    result = await fetch_webhook(engine, airtable.client(), airtable.webhook.id)

    assert (result.payloads, result.recorded) == (4, 4)
    assert len(events(db)) == 4
    assert db.execute("SELECT count(*) FROM outbox").fetchone() == (4,)
    assert cursor(db, airtable.webhook.id) == 5


async def test_concurrent_fetchers_fetch_each_payload_once(
    airtable: Airtable, engine: AsyncEngine, db: Conn
) -> None:
    await register(engine, airtable)
    add_leads(airtable, 60)
    client = airtable.client()

    results = await asyncio.gather(
        *(fetch_webhook(engine, client, airtable.webhook.id) for _ in range(3))
    )

    # The advisory lock serialises them: no payload was recorded by two fetchers.
    assert sum(r.payloads for r in results) == 60
    assert sum(r.recorded for r in results) == 60
    assert len(events(db)) == 60


async def test_requests_stay_under_five_per_second_per_base(
    airtable: Airtable, engine: AsyncEngine, db: Conn
) -> None:
    airtable.fake.rate_limit_per_base = 5  # the fake enforces Airtable's limit: 429 past it
    await register(engine, airtable)
    add_leads(airtable, 120)
    client = airtable.client()

    # Three pages with payloads, then empty ones: twelve requests in all, back to back.
    for _ in range(12):
        await fetch_page(engine, client, airtable.webhook.id)

    seen = airtable.fake.requests_for(airtable.base.id)
    assert len(seen) == 12
    assert all(r.status == 200 for r in seen), "the fake's own 5/s limit answered 429"
    times = [r.at for r in seen]
    # Any six consecutive requests span at least a second.
    assert min(b - a for a, b in zip(times, times[5:], strict=False)) >= 1.0
    assert len(events(db)) == 120


async def test_429_pauses_the_base_then_resumes(
    airtable: Airtable, engine: AsyncEngine, db: Conn
) -> None:
    await register(engine, airtable)
    add_leads(airtable, 2)
    airtable.fake.fail_next(429, path_contains="/payloads")

    result = await fetch_webhook(engine, airtable.client(pause=0.5), airtable.webhook.id)

    assert result.recorded == 2
    seen = airtable.fake.requests_for(airtable.base.id, "/payloads")
    assert [r.status for r in seen] == [429, 200]
    assert seen[1].at - seen[0].at >= 0.5
    assert cursor(db, airtable.webhook.id) == 3


async def test_server_error_is_transient_and_keeps_the_cursor(
    airtable: Airtable, engine: AsyncEngine, db: Conn
) -> None:
    await register(engine, airtable)
    add_leads(airtable, 2)
    airtable.fake.fail_next(503)
    with pytest.raises(AirtableUnavailableError):
        await fetch_webhook(engine, airtable.client(), airtable.webhook.id)
    assert cursor(db, airtable.webhook.id) == 1
    assert (await fetch_webhook(engine, airtable.client(), airtable.webhook.id)).recorded == 2


async def test_webhook_lifecycle(airtable: Airtable, engine: AsyncEngine, db: Conn) -> None:
    client = airtable.client()
    created = await create_webhook(
        engine, client, airtable.base.id, "https://sluice.example/webhooks/airtable"
    )
    assert created.mac_secret_base64
    assert created.webhook_id in airtable.base.webhooks
    assert cursor(db, created.webhook_id) == 1

    listed = await list_webhooks(engine, client)
    assert {w.webhook_id for w in listed} == {created.webhook_id, airtable.webhook.id}
    assert next(w for w in listed if w.webhook_id == created.webhook_id).cursor == 1

    # About to expire: the refresh job moves it seven days out, in Airtable and in the registry.
    soon = datetime.now(UTC) + timedelta(hours=1)
    airtable.base.webhooks[created.webhook_id].expiration_time = soon
    outcomes = await refresh_all(engine, client)
    assert [(o.webhook_id, o.error) for o in outcomes] == [(created.webhook_id, None)]
    fake_expiry = airtable.base.webhooks[created.webhook_id].expiration_time
    assert fake_expiry > datetime.now(UTC) + timedelta(days=6)
    row = db.execute("SELECT expires_at, refreshed_at FROM airtable_webhooks").fetchone()
    assert row is not None
    assert row[0] > datetime.now(UTC) + timedelta(days=6)
    assert row[1] is not None

    await delete_webhook(engine, client, created.webhook_id)
    assert created.webhook_id not in airtable.base.webhooks
    assert db.execute("SELECT count(*) FROM airtable_webhooks").fetchone() == (0,)


async def project(engine: AsyncEngine, airtable: Airtable, db: Conn) -> None:
    """Fetch, then apply the recorded changes to the projections (as the leads consumer does)."""
    changes = await fetched_changes(engine, airtable, db)
    await apply_each(engine, airtable.resolver(), [changes])


async def test_leads_follow_changes_and_keep_staff_columns(
    airtable: Airtable, engine: AsyncEngine, db: Conn
) -> None:
    await register(engine, airtable)
    [rec] = airtable.fake.create_records(
        airtable.base.id,
        "Leads",
        [
            {
                "Full Name": "Ada Lovelace",
                "Email": "ada@example.com",
                "Company": "Engines Ltd",
                "Lead Status": "New",
                "SMS Sequence Step": 1,
                "SMS Sent Count": 0,
                "Opted Out": False,
            }
        ],
    )
    await project(engine, airtable, db)
    assert lead(db, rec, "full_name", "email", "company", "lead_status", "sms_sent_count") == (
        "Ada Lovelace",
        "ada@example.com",
        "Engines Ltd",
        "New",
        0,
    )
    db.execute(
        "UPDATE leads SET claimed_by = 'sam', claimed_at = now(), notes = 'call back' "
        "WHERE record_id = %s",
        (rec,),
    )

    # Airtable changes two fields, and someone edits the Airtable copies of the staff fields.
    airtable.fake.update_records(
        airtable.base.id,
        "Leads",
        {
            rec: {
                "Lead Status": "Contacted",
                "SMS Sent Count": 1,
                "Claimed By": "someone",
                "Notes": "x",
            }
        },
    )
    await project(engine, airtable, db)

    assert lead(
        db, rec, "lead_status", "sms_sent_count", "email", "company", "claimed_by", "notes"
    ) == ("Contacted", 1, "ada@example.com", "Engines Ltd", "sam", "call back")
    assert lead(db, rec, "airtable_txn") == (2,)

    airtable.fake.destroy_records(airtable.base.id, "Leads", [rec])
    await project(engine, airtable, db)

    deleted_at, claimed_by, notes, status = lead(
        db, rec, "deleted_at", "claimed_by", "notes", "lead_status"
    )
    assert deleted_at is not None
    assert (claimed_by, notes, status) == ("sam", "call back", "Contacted")


async def test_a_late_older_change_never_wins(
    airtable: Airtable, engine: AsyncEngine, db: Conn
) -> None:
    await register(engine, airtable)
    [rec] = airtable.fake.create_records(airtable.base.id, "Leads", [{"Campaign": "spring"}])
    airtable.fake.update_records(airtable.base.id, "Leads", {rec: {"Campaign": "summer"}})
    airtable.fake.update_records(airtable.base.id, "Leads", {rec: {"Campaign": "autumn"}})
    changes = await fetched_changes(engine, airtable, db)

    # Newest first, in separate batches: the older ones arrive late and must lose.
    await apply_each(engine, airtable.resolver(), [[change] for change in reversed(changes)])

    assert lead(db, rec, "campaign", "airtable_txn") == ("autumn", 3)
    # Field names were resolved to ids once: one schema request for the base.
    assert len(airtable.fake.requests_for(airtable.base.id, "/meta/bases/")) == 1


async def test_an_error_payload_is_recorded_counted_and_listed(
    airtable: Airtable,
    engine: AsyncEngine,
    db: Conn,
    database_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await register(engine, airtable)
    [rec] = add_leads(airtable, 1)
    airtable.fake.break_webhook(airtable.base.id, airtable.webhook.id, "INVALID_HOOK")
    add_leads(airtable, 1)  # after the error: Airtable no longer reports changes

    async with transaction(engine) as conn:
        fetched = await AirtableFetcher(airtable.client()).apply(
            conn, [Ping(airtable.webhook.id, airtable.base.id)]
        )
    logs = [json.loads(line) for line in capsys.readouterr().err.splitlines()]

    # The cursor moved past the error payload; only the change before it became an event.
    assert cursor(db, airtable.webhook.id) == 3
    assert [e[2] for e in events(db)] == [f"{airtable.base.id}/{airtable.table.id}/{rec}"]
    assert fetched.tally[("sluice_airtable_payload_errors", ("INVALID_HOOK",))] == 1
    assert [
        (e["webhook_id"], e["code"]) for e in logs if e["event"] == "airtable.payload_error"
    ] == [(airtable.webhook.id, "INVALID_HOOK")]
    row = db.execute(
        "SELECT last_error_code, last_error_at IS NOT NULL FROM airtable_webhooks"
    ).fetchone()
    assert row == ("INVALID_HOOK", True)

    env = {
        "DATABASE_URL": database_url,
        "AIRTABLE_API_URL": airtable.url,
        "AIRTABLE_API_KEY": airtable.fake.token,
        # The command configures logging for this whole process: as the test session has it.
        "SLUICE_LOG_FORMAT": "json",
        "SLUICE_LOG_LEVEL": "warning",
    }
    # In a thread: the fake Airtable is served by this test's event loop.
    listed = await asyncio.to_thread(
        CliRunner().invoke, app, ["airtable", "webhooks", "list"], env=env
    )
    assert listed.exit_code == 0, listed.output
    [hook] = [json.loads(line) for line in listed.stdout.splitlines()]
    assert (hook["webhook_id"], hook["enabled"], hook["sluice_cursor"]) == (
        airtable.webhook.id,
        False,
        3,
    )
    assert hook["last_error"]["code"] == "INVALID_HOOK"
    assert hook["destroyed_table_ids"] == []
