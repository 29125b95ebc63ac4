"""`sluice reconcile airtable`: the table sweep against the fake Airtable API (pyairtable
unchanged) and a real PostgreSQL, its snapshots applied by the leads consumer's own batch path.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from commands.main import app
from consumers.lead_sync import stamp_app_change
from consumers.leads import LeadsProjection
from consumers.writeback_pusher import PusherConfig, WritebackPusher
from devkit.fakes.airtable import add_leads_table
from ingest.airtable_fetch import fetch_webhook
from providers.airtable import (
    AirtableRequestError,
    AirtableUnavailableError,
    breaker_counts,
)
from recovery.reconcile_airtable import AirtableOptions
from recovery.runs import reconcile
from sluice.db import create_engine, transaction
from sluice.resilience import CircuitBreaker, RetryPolicy
from sluice.settings import Settings
from tests.support.api import insert_lead
from tests.support.pipeline import lead_row, relay_and_writeback, running
from tests.support.recovery import apply_as, clear_outbox, outbox_rows
from tests.support.rows import scalar
from tests.support.waiting import eventually

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from devkit.fakes.airtable import RecordedRequest
    from tests.support.airtable import Airtable
    from tests.support.api import Conn

SPEC = {"options": {"filters": {"dataTypes": ["tableData"]}}}
PAUSE_AFTER_429 = 0.3
_SET_NOTES = text("UPDATE leads SET notes = :notes WHERE record_id = :id")
_FORMULA = re.compile(r"IS_AFTER\(LAST_MODIFIED_TIME\(\), DATETIME_PARSE\('([^']+)'\)\)")


def settings_for(database_url: str, airtable: Airtable, **extra: Any) -> Settings:
    return Settings(
        DATABASE_URL=database_url,
        AIRTABLE_API_URL=airtable.url,
        AIRTABLE_API_KEY=airtable.fake.token,
        AIRTABLE_RATE_LIMIT_WAIT_SECONDS=PAUSE_AFTER_429,
        **extra,
    )


@pytest.fixture
def settings(database_url: str, airtable: Airtable) -> Settings:
    return settings_for(database_url, airtable)


async def run(settings: Settings, *, full: bool = False, lookback: int = 60) -> dict[str, Any]:
    options = AirtableOptions(lookback_minutes=lookback, full=full)
    return (await reconcile(settings, "airtable", airtable=options)).as_json()


async def apply_outbox(airtable: Airtable, database_url: str, db: Conn) -> None:
    """The leads consumer applies what the outbox holds; then the relay's part: rows gone."""
    outcome = await apply_as(LeadsProjection(airtable.client()), database_url, outbox_rows(db))
    assert outcome.dead == []
    clear_outbox(database_url)


def tally(summary: dict[str, Any], entity: str) -> tuple[int, int, int, int]:
    t = summary["by_entity"][entity]
    return (t["scanned"], t["created"], t["updated"], t["skipped"])


async def test_records_whose_payloads_were_lost_are_recovered_once(
    airtable: Airtable, settings: Settings, database_url: str, db: Conn
) -> None:
    ada, grace, alan = airtable.leads(
        {"Full Name": "Ada Lovelace", "Email": "ada@example.com", "Lead Status": "New"},
        {"Full Name": "Grace Hopper", "SMS Sent Count": 3, "Opted Out": True},
        {"Full Name": "Alan Turing", "Last SMS Sent At": "2025-05-01T09:30:00.000Z"},
    )
    await airtable.registered_webhook(database_url)  # made after them: their payloads are not there

    first = await run(settings)
    assert first["errors"] == []
    assert tally(first, "lead") == (3, 3, 0, 0)
    assert first["sweep"]["mode"] == "lookback"
    assert (first["sweep"]["tables"], first["sweep"]["pages"]) == (1, 1)
    events = db.execute(
        "SELECT provider_event_id, event_type, headers FROM inbound_events"
    ).fetchall()
    assert {e[1] for e in events} == {"airtable.record.created"}
    assert all(
        re.fullmatch(r"sweep:0\.new\.[0-9a-f]{16}:tbl\w+:rec\w+:created", e[0]) for e in events
    )
    assert all(e[2] == {"sluice-synthetic": "reconcile"} for e in events)
    rows = outbox_rows(db)
    assert {r["key"] for r in rows} == {airtable.key(r) for r in (ada, grace, alan)}
    assert {r["topic"] for r in rows} == {"airtable.records"}
    assert all(r["headers"]["sluice-synthetic"] == "reconcile" for r in rows)
    snapshot = rows[0]["payload"]["data"]
    # Every mapped source field, empty ones as null, and no app-owned one.
    assert len(snapshot["cells"]) == 16
    assert (snapshot["base_transaction_number"], snapshot["webhook_id"]) == (0, None)

    # Before the consumers catch up, a second run finds its snapshots stored.
    again = await run(settings)
    assert tally(again, "lead") == (3, 0, 0, 3)
    assert len(outbox_rows(db)) == 3

    await apply_outbox(airtable, database_url, db)
    row = lead_row(db, ada)
    assert row is not None
    assert (row["full_name"], row["email"], row["lead_status"], row["airtable_txn"]) == (
        "Ada Lovelace",
        "ada@example.com",
        "New",
        0,
    )
    created = airtable.table.records[ada].created_time
    assert row["airtable_created_at"] == created.replace(
        microsecond=created.microsecond // 1000 * 1000
    )
    assert (lead_row(db, grace) or {}).get("sms_sent_count") == 3
    assert (lead_row(db, grace) or {}).get("opted_out") is True
    assert (lead_row(db, alan) or {}).get("last_sms_sent_at") == datetime(
        2025, 5, 1, 9, 30, tzinfo=UTC
    )

    third = await run(settings)
    assert tally(third, "lead") == (3, 0, 0, 3)
    assert tally(third, "writeback") == (3, 0, 0, 3)
    assert outbox_rows(db) == []


async def test_a_stale_lead_is_updated_and_staff_columns_kept(
    airtable: Airtable, settings: Settings, database_url: str, db: Conn
) -> None:
    ada, _grace = airtable.leads(
        {
            "Full Name": "Ada Lovelace",
            "Company": "Analytical Engines",
            "Lead Status": "New",
            "Claimed By": "amy",
            "Notes": "hot",
        },
        {"Full Name": "Grace Hopper"},
    )
    await airtable.registered_webhook(database_url)
    await run(settings)
    await apply_outbox(airtable, database_url, db)
    db.execute("UPDATE leads SET claimed_by = 'amy', notes = 'hot' WHERE record_id = %s", (ada,))
    with airtable.payloads_lost():
        airtable.fake.update_records(
            airtable.base.id, "Leads", {ada: {"Lead Status": "Qualified", "Company": None}}
        )

    summary = await run(settings)
    assert summary["errors"] == []
    assert tally(summary, "lead") == (2, 0, 1, 1)
    assert tally(summary, "writeback") == (2, 0, 0, 2)  # Airtable holds the staff values
    [row] = outbox_rows(db)
    assert row["key"] == airtable.key(ada)
    assert row["payload"]["type"] == "airtable.record.changed"
    assert row["payload"]["data"]["sweep"].startswith("0.")
    await apply_outbox(airtable, database_url, db)
    lead = lead_row(db, ada)
    assert lead is not None
    assert (lead["lead_status"], lead["company"], lead["full_name"]) == (
        "Qualified",
        None,
        "Ada Lovelace",
    )
    assert (lead["claimed_by"], lead["notes"], lead["airtable_txn"]) == ("amy", "hot", 0)
    assert tally(await run(settings), "lead") == (2, 0, 0, 2)


async def test_a_webhook_change_landing_before_the_snapshot_wins(
    airtable: Airtable, settings: Settings, database_url: str, db: Conn
) -> None:
    hook = await airtable.registered_webhook(database_url)
    [ada] = airtable.leads({"Full Name": "Ada Lovelace", "Lead Status": "New"})
    await run(settings)  # drains the created record's payload
    await apply_outbox(airtable, database_url, db)
    row = lead_row(db, ada)
    assert row is not None
    assert (row["airtable_txn"], row["opted_out"]) == (1, None)  # the payload left it out
    assert tally(await run(settings), "lead") == (1, 0, 0, 1)  # which is no difference
    with airtable.payloads_lost():
        airtable.fake.update_records(airtable.base.id, "Leads", {ada: {"Lead Status": "Contacted"}})

    summary = await run(settings)
    assert tally(summary, "lead") == (1, 0, 1, 0)
    snapshot = outbox_rows(db)
    assert snapshot[0]["payload"]["data"]["base_transaction_number"] == 1
    clear_outbox(database_url)
    # Airtable changes again, and this change's payload arrives before the snapshot is applied.
    airtable.fake.update_records(airtable.base.id, "Leads", {ada: {"Lead Status": "Qualified"}})
    engine = create_engine(database_url, pool_size=1)
    try:
        await fetch_webhook(engine, airtable.client(), hook.id)
    finally:
        await engine.dispose()
    await apply_outbox(airtable, database_url, db)
    outcome = await apply_as(LeadsProjection(airtable.client()), database_url, snapshot)
    assert (outcome.applied, outcome.dead) == (1, [])

    lead = lead_row(db, ada)
    assert lead is not None
    assert (lead["lead_status"], lead["airtable_txn"]) == ("Qualified", 3)


async def test_full_sweep_marks_a_destroyed_record_deleted(
    airtable: Airtable, settings: Settings, database_url: str, db: Conn
) -> None:
    kept, gone = airtable.leads({"Full Name": "Ada Lovelace"}, {"Full Name": "Grace Hopper"})
    await airtable.registered_webhook(database_url)
    await run(settings)
    await apply_outbox(airtable, database_url, db)
    db.execute("UPDATE leads SET notes = 'called twice' WHERE record_id = %s", (gone,))
    with airtable.payloads_lost():
        airtable.fake.destroy_records(airtable.base.id, "Leads", [gone])

    # A lookback sweep cannot tell a destroyed record from an unchanged one.
    assert tally(await run(settings), "lead") == (1, 0, 0, 1)
    assert outbox_rows(db) == []

    summary = await run(settings, full=True)
    assert summary["errors"] == []
    assert summary["full"] is True
    assert (summary["sweep"]["mode"], summary["sweep"]["modified_after"]) == ("full", None)
    assert tally(summary, "lead") == (2, 0, 1, 1)
    [row] = outbox_rows(db)
    assert (row["key"], row["payload"]["type"]) == (airtable.key(gone), "airtable.record.destroyed")
    await apply_outbox(airtable, database_url, db)
    lead = lead_row(db, gone)
    assert lead is not None
    assert lead["deleted_at"] is not None
    assert (lead["full_name"], lead["notes"]) == ("Grace Hopper", "called twice")
    assert (lead_row(db, kept) or {}).get("deleted_at") is None
    assert tally(await run(settings, full=True), "lead") == (1, 0, 0, 1)


async def test_lookback_lists_only_recently_modified_records(
    airtable: Airtable, settings: Settings, database_url: str, db: Conn
) -> None:
    old, recent, also_old = airtable.leads(
        {"Full Name": "Ada Lovelace"}, {"Full Name": "Grace Hopper"}, {"Full Name": "Alan Turing"}
    )
    for record_id in (old, also_old):
        airtable.table.records[record_id].modified_time = datetime.now(UTC) - timedelta(hours=3)
    await airtable.registered_webhook(database_url)

    before = datetime.now(UTC)
    summary = await run(settings, lookback=90)
    assert summary["errors"] == []
    [listing] = airtable.fake.listings
    match = _FORMULA.fullmatch(listing["filterByFormula"])
    assert match is not None, listing
    cutoff = datetime.fromisoformat(match.group(1))
    assert abs(cutoff - (before - timedelta(minutes=90))) < timedelta(seconds=5)
    assert summary["sweep"]["modified_after"] is not None
    assert (listing["pageSize"], listing["returnFieldsByFieldId"]) == ("100", "1")
    mapped = {f.id for f in airtable.table.fields}
    assert set(listing["fields"]) == mapped  # every mapped field, source- and app-owned
    assert tally(summary, "lead") == (1, 1, 0, 0)
    assert [r["key"] for r in outbox_rows(db)] == [airtable.key(recent)]

    # The fake, as Airtable, refuses a formula it does not understand.
    with pytest.raises(AirtableRequestError, match="INVALID_FILTER_BY_FORMULA") as refused:
        await asyncio.to_thread(
            airtable.client().record_page, airtable.base.id, airtable.table.id, formula="TRUE()"
        )
    assert refused.value.status == 422


async def test_writeback_is_asked_again_for_app_values_airtable_lacks(
    airtable: Airtable, settings: Settings, database_url: str, db: Conn
) -> None:
    claimed, failed, edited = airtable.leads(
        {"Full Name": "Ada Lovelace"}, {"Full Name": "Grace Hopper"}, {"Full Name": "Alan Turing"}
    )
    await airtable.registered_webhook(database_url)
    await run(settings)
    await apply_outbox(airtable, database_url, db)
    engine = create_engine(database_url, pool_size=2)
    try:
        # Set in the app before the write-back existed: never stamped, never pushed.
        db.execute("UPDATE leads SET claimed_by = 'amy' WHERE record_id = %s", (claimed,))
        # A staff note whose push failed for good (a 4xx), so it is not retried by itself.
        await staff_note(engine, failed, "call back Monday")
        db.execute(
            "UPDATE lead_sync SET status = 'failed', next_attempt_at = NULL WHERE record_id = %s",
            (failed,),
        )
        # A note pushed earlier, then changed in Airtable by a colleague; that payload was lost.
        await staff_note(engine, edited, "first call done")
        db.execute(
            "UPDATE lead_sync_fields SET pushed_app_changed_at = app_changed_at"
            " WHERE record_id = %s",
            (edited,),
        )
        db.execute("UPDATE lead_sync SET status = 'synced' WHERE record_id = %s", (edited,))
        with airtable.payloads_lost():
            airtable.fake.update_records(
                airtable.base.id, "Leads", {edited: {"Notes": "not a lead"}}
            )

        summary = await run(settings)
        assert summary["errors"] == []
        assert tally(summary, "writeback") == (3, 2, 0, 1)
        assert tally(summary, "lead") == (3, 0, 0, 3)  # app-owned cells are not the sweep's
        pending = "SELECT status FROM lead_sync WHERE record_id = %s"
        assert [scalar(db, pending, r) for r in (claimed, failed, edited)] == [
            "pending",
            "pending",
            "synced",
        ]

        pusher = WritebackPusher(
            engine,
            airtable.client(),
            CircuitBreaker("airtable", counts=breaker_counts),
            PusherConfig(call_retry=RetryPolicy(attempts=1, retry_on=AirtableUnavailableError)),
        )
        pushed = await pusher.push_once()
        assert (pushed.synced, pushed.failed, pushed.conflicts) == (2, 0, 0)
    finally:
        await engine.dispose()
    assert airtable.cell(claimed, "Claimed By") == "amy"
    assert airtable.cell(failed, "Notes") == "call back Monday"
    assert airtable.cell(edited, "Notes") == "not a lead"  # Airtable's later edit stands
    again = await run(settings)
    assert tally(again, "writeback") == (3, 0, 0, 3)


async def staff_note(engine: AsyncEngine, record_id: str, note: str) -> None:
    """What the App API does when staff change a lead's notes."""
    async with transaction(engine) as conn:
        await conn.execute(_SET_NOTES, {"notes": note, "id": record_id})
        await stamp_app_change(conn, record_id, ["notes"])


async def test_a_429_mid_sweep_waits_and_is_retried(
    airtable: Airtable, settings: Settings, database_url: str
) -> None:
    airtable.leads(*({"Full Name": f"Lead {i}"} for i in range(250)))
    await airtable.registered_webhook(database_url)
    injected = False

    def rate_limit_the_second_page(request: RecordedRequest) -> None:
        nonlocal injected
        if not injected and request.path.endswith(airtable.table.id):
            injected = True
            airtable.fake.fail_next(429, times=1, path_contains=airtable.table.id)

    airtable.fake.on_request = rate_limit_the_second_page
    summary = await run(settings)

    assert summary["errors"] == []
    assert tally(summary, "lead") == (250, 250, 0, 0)
    pages = airtable.table_requests()
    assert [r.status for r in pages] == [200, 429, 200, 200]
    assert pages[2].at - pages[1].at >= PAUSE_AFTER_429  # the base's pause after a 429
    assert (summary["sweep"]["pages"], summary["sweep"]["requests"]) == (3, 5)  # + the schema


async def test_the_drain_retries_an_unavailable_airtable_and_every_request_counts(
    airtable: Airtable, settings: Settings, database_url: str
) -> None:
    hook = await airtable.registered_webhook(database_url)
    airtable.leads({"Full Name": "Ada Lovelace"})  # after the webhook: a payload to drain
    airtable.fake.fail_next(503, times=2, path_contains="/payloads")

    summary = await run(settings)

    assert summary["errors"] == []
    assert tally(summary, "payload")[:2] == (1, 1)
    drained = [r for r in airtable.fake.requests if r.path.endswith(f"{hook.id}/payloads")]
    assert [r.status for r in drained][:3] == [503, 503, 200]  # 2 retries of the 4 tries
    # One rule: every request sent, retries included; the sweep's share is its own.
    assert summary["requests"] == len(airtable.fake.requests)
    assert summary["sweep"]["requests"] == len(airtable.fake.requests) - len(drained)


async def test_an_unavailable_airtable_is_reported_and_the_breaker_stops_the_run(
    airtable: Airtable, database_url: str, db: Conn
) -> None:
    second = airtable.fake.add_base("Airtable EU", base_id="appZZZZZZZZZZZZZZ")
    add_leads_table(airtable.fake, second.id)
    # Bases known from the leads already projected (no webhook is registered any more).
    insert_lead(db, base_id=airtable.base.id, table_id=airtable.table.id)
    insert_lead(db, base_id=second.id, table_id="tblEU")
    airtable.fake.fail_next(503, times=1000)
    settings = settings_for(database_url, airtable, AIRTABLE_BREAKER_THRESHOLD=1)

    summary = await run(settings)
    first, last = sorted([airtable.base.id, second.id])
    assert [e["record"] for e in summary["errors"]] == [f"base:{first}", "run"]
    assert "AirtableUnavailableError" in summary["errors"][0]["error"]
    assert "CircuitOpenError" in summary["errors"][1]["error"]
    assert len(airtable.fake.requests) == 4  # tried four times, then the breaker kept it at that
    assert last not in {r.base_id for r in airtable.fake.requests}

    env = {
        "DATABASE_URL": database_url,
        "AIRTABLE_API_URL": airtable.url,
        "AIRTABLE_API_KEY": airtable.fake.token,
        "SLUICE_LOG_LEVEL": "error",
    }
    runner = CliRunner()
    # In a thread: the fake Airtable is served by this test's event loop.
    failed = await asyncio.to_thread(
        runner.invoke, app, ["reconcile", "airtable", "--full"], env=env
    )
    assert failed.exit_code == 1, failed.output
    assert json.loads(failed.stdout)["errors"]
    refused = await asyncio.to_thread(
        runner.invoke, app, ["reconcile", "airtable", "--lookback-minutes", "0"], env=env
    )
    assert refused.exit_code == 2
    both = await asyncio.to_thread(
        runner.invoke, app, ["reconcile", "airtable", "--full", "--lookback-minutes", "30"], env=env
    )
    assert both.exit_code == 2
    assert "not both" in both.output


@pytest.mark.broker
@pytest.mark.slow
async def test_sweep_results_flow_through_the_broker(
    airtable: Airtable, settings: Settings, database_url: str, kafka_bootstrap: str, db: Conn
) -> None:
    """Lost records come in through Kafka and the leads consumer; a staff value Airtable lacks
    goes out through the write-back consumer's pusher."""
    [ada] = airtable.leads({"Full Name": "Ada Lovelace", "Lead Status": "New"})
    await airtable.registered_webhook(database_url)
    suffix = uuid.uuid4().hex[:10]
    engine = create_engine(database_url, pool_size=4)
    client = airtable.client()
    try:
        async with (
            relay_and_writeback(client, engine, database_url, kafka_bootstrap, suffix),
            running(
                LeadsProjection(client, (f"airtable.records.{suffix}",)), engine, kafka_bootstrap
            ),
        ):
            assert tally(await run(settings), "lead") == (1, 1, 0, 0)
            await eventually(lambda: lead_row(db, ada) is not None)
            assert (lead_row(db, ada) or {}).get("lead_status") == "New"

            db.execute("UPDATE leads SET claimed_by = 'amy' WHERE record_id = %s", (ada,))
            assert tally(await run(settings), "writeback") == (1, 1, 0, 0)
            await eventually(lambda: airtable.cell(ada, "Claimed By") == "amy")
            await eventually(
                lambda: (
                    scalar(db, "SELECT status FROM lead_sync WHERE record_id = %s", ada) == "synced"
                )
            )
    finally:
        await engine.dispose()
