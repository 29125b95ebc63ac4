from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from commands.main import app
from devkit.fakes.square import FakeSquare
from providers.square import SquareReader
from recovery.lock import RunLockedError, run_lock
from recovery.reconcile_square import SquareWindow, reconcile_square
from recovery.run_metrics import RunMetrics, export_run
from recovery.runs import EXIT_LOCKED, reconcile
from recovery.summary import RunSummary
from sluice.db import create_engine
from sluice.resilience import BreakerState
from tests.support.recovery import apply_as_jobs_consumer, clear_outbox, outbox_rows
from tests.support.services import running_server
from tests.support.square import reconcile_settings

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    import psycopg

    from sluice.settings import Settings

NOW = datetime.now(UTC)


@pytest.fixture
async def fake_square() -> AsyncIterator[tuple[FakeSquare, str]]:
    fake = FakeSquare()
    async with running_server(fake.app) as url:
        yield fake, url


@pytest.fixture
def square_settings(database_url: str, fake_square: tuple[FakeSquare, str]) -> Settings:
    return reconcile_settings(database_url, *fake_square)


def seed(fake: FakeSquare, bookings: int = 3) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    customer = fake.add_customer(given_name="Grace", family_name="Hopper")
    made = [
        fake.add_booking(NOW + timedelta(hours=i + 1), customer_id=customer["id"])
        for i in range(bookings)
    ]
    return customer, made


async def test_missing_bookings_are_recovered_once(
    square_settings: Settings,
    fake_square: tuple[FakeSquare, str],
    db: psycopg.Connection[Any],
    database_url: str,
) -> None:
    fake, _ = fake_square
    customer, bookings = seed(fake)

    first = await reconcile(square_settings, "square")
    summary = first.as_json()
    assert summary["errors"] == []
    assert summary["by_entity"]["booking"] == {
        "scanned": 3,
        "created": 3,
        "updated": 0,
        "skipped": 0,
    }
    assert summary["by_entity"]["customer"]["created"] == 1

    events = db.execute(
        "SELECT provider_event_id, event_type, headers, body FROM inbound_events ORDER BY 1"
    ).fetchall()
    ids = {e[0] for e in events}
    assert ids == {f"reconcile:booking:{b['id']}:0" for b in bookings} | {
        f"reconcile:customer:{customer['id']}:0"
    }
    assert all(e[2] == {"sluice-synthetic": "reconcile"} for e in events)
    body = json.loads(bytes(events[0][3]))
    assert body["sluice_synthetic"]["reason"] == "missing"
    rows = outbox_rows(db)
    assert [r["topic"] for r in rows] == ["square.customers", *["square.bookings"] * 3]
    by_key = {r["key"]: r for r in rows}
    assert by_key[bookings[0]["id"]]["payload"]["data"]["data"]["object"]["booking"] == bookings[0]
    assert by_key[bookings[0]["id"]]["headers"]["sluice-synthetic"] == "reconcile"

    # Before the consumers catch up, a second run creates nothing new.
    again = (await reconcile(square_settings, "square")).as_json()
    assert (again["created"], again["updated"], again["skipped"]) == (0, 0, 4)
    assert len(outbox_rows(db)) == 4

    # The jobs consumer applies the synthetic events like any other.
    outcome = await apply_as_jobs_consumer(database_url, rows)
    assert (outcome.applied, outcome.dead) == (4, [])
    jobs = db.execute(
        "SELECT booking_id, booking_version, customer_name FROM jobs ORDER BY start_at"
    ).fetchall()
    assert jobs == [(b["id"], 0, "Grace Hopper") for b in bookings]
    clear_outbox(database_url)
    third = (await reconcile(square_settings, "square")).as_json()
    assert (third["created"], third["updated"], third["skipped"]) == (0, 0, 4)
    assert outbox_rows(db) == []


async def test_stale_booking_is_updated_and_staff_columns_kept(
    square_settings: Settings,
    fake_square: tuple[FakeSquare, str],
    db: psycopg.Connection[Any],
    database_url: str,
) -> None:
    fake, _ = fake_square
    _, bookings = seed(fake, bookings=2)
    await reconcile(square_settings, "square")
    await apply_as_jobs_consumer(database_url, outbox_rows(db))
    clear_outbox(database_url)
    target = bookings[0]["id"]
    db.execute(
        "UPDATE jobs SET work_status = 'in_progress', notes = 'gate code 1234' "
        "WHERE booking_id = %s",
        (target,),
    )
    # Square changed the booking; the webhook for it never arrived, and event search was off
    # then: only the sweep can find it.
    fake.search_enabled = False
    fake.update_booking(target, status="CANCELLED_BY_CUSTOMER")

    summary = (await reconcile(square_settings, "square")).as_json()
    assert summary["by_entity"]["booking"] == {
        "scanned": 2,
        "created": 0,
        "updated": 1,
        "skipped": 1,
    }
    rows = outbox_rows(db)
    assert [r["key"] for r in rows] == [target]
    assert rows[0]["payload"]["providereventid"] == f"reconcile:booking:{target}:1"
    await apply_as_jobs_consumer(database_url, rows)
    job = db.execute(
        "SELECT status, booking_version, work_status, notes FROM jobs WHERE booking_id = %s",
        (target,),
    ).fetchone()
    assert job == ("CANCELLED_BY_CUSTOMER", 1, "in_progress", "gate code 1234")


async def test_a_run_refuses_while_another_holds_the_lock(
    square_settings: Settings, fake_square: tuple[FakeSquare, str], database_url: str
) -> None:
    seed(fake_square[0], bookings=1)
    engine = create_engine(database_url, pool_size=1)
    try:
        async with run_lock(engine, "reconcile:square"):
            with pytest.raises(RunLockedError):
                await reconcile(square_settings, "square")
            # Another source is not blocked.
            assert (await reconcile(square_settings, "airtable")).ok
        assert (await reconcile(square_settings, "square")).ok
    finally:
        await engine.dispose()


async def test_cli_prints_the_summary_and_exits_75_when_locked(
    square_settings: Settings, fake_square: tuple[FakeSquare, str], db: psycopg.Connection[Any]
) -> None:
    fake, url = fake_square
    seed(fake, bookings=2)
    env = {
        "DATABASE_URL": square_settings.require_database_url(),
        "SQUARE_API_URL": url,
        "SQUARE_ACCESS_TOKEN": fake.token,
        "SLUICE_LOG_LEVEL": "error",
    }
    runner = CliRunner()
    # In a thread: the fake Square is served by this test's event loop.
    result = await asyncio.to_thread(runner.invoke, app, ["reconcile", "square"], env=env)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["created"] == 3
    assert set(summary) >= {
        "scanned",
        "created",
        "updated",
        "skipped",
        "errors",
        "duration_seconds",
    }

    db.execute("SELECT pg_advisory_lock(%s, hashtext('reconcile:square'))", (0x51D0,))
    try:
        locked = await asyncio.to_thread(runner.invoke, app, ["reconcile", "square"], env=env)
    finally:
        db.execute("SELECT pg_advisory_unlock(%s, hashtext('reconcile:square'))", (0x51D0,))
    assert locked.exit_code == EXIT_LOCKED
    assert "in progress" in locked.stderr


async def test_long_ranges_are_walked_in_windows_of_31_days(
    square_settings: Settings, fake_square: tuple[FakeSquare, str]
) -> None:
    fake, _ = fake_square
    for days in (1, 40, 65):
        fake.add_booking(NOW + timedelta(days=days))
    summary = await reconcile(
        square_settings, "square", square_window=(NOW, NOW + timedelta(days=70))
    )
    assert summary.ok, summary.errors
    assert summary.entity("booking").created == 3
    windows = [
        (
            datetime.fromisoformat(r.query["start_at_min"]),
            datetime.fromisoformat(r.query["start_at_max"]),
        )
        for r in fake.requests_to("/v2/bookings")
    ]
    assert len(windows) == 3
    assert all(high - low <= timedelta(days=31) for low, high in windows)


async def test_failing_square_is_reported_and_the_breaker_stops_the_run(
    fake_square: tuple[FakeSquare, str], square_settings: Settings, database_url: str
) -> None:
    fake, _ = fake_square
    seed(fake, bookings=1)
    fake.fail_next(500, times=1000, path_contains="/v2/bookings")
    settings = square_settings.model_copy(
        update={"square_breaker_threshold": 3, "square_breaker_reset_seconds": 60}
    )
    engine = create_engine(database_url, pool_size=1)
    summary = RunSummary("square")
    try:
        async with SquareReader.from_settings(settings, sdk_retries=0) as reader:
            window = SquareWindow(NOW - timedelta(days=200), NOW)
            await reconcile_square(engine, reader, window, summary)
            assert reader.breaker.state is BreakerState.OPEN
    finally:
        await engine.dispose()
    records = [e.record for e in summary.errors]
    assert records[:3] == [e.record for e in summary.errors if e.record.startswith("window:")]
    assert "SquareUnavailableError: Square answered 500" in summary.errors[0].error
    assert records[-1] == "run"
    assert "CircuitOpenError" in summary.errors[-1].error
    # Seven windows in the range, but Square was asked only until the breaker opened.
    assert len(fake.requests_to("/v2/bookings")) == 3
    # RetrieveMerchant, EnableEvents, SearchEvents, SearchCustomers and three ListBookings.
    assert summary.details["requests"] == 7


async def test_the_sdk_retries_what_square_answered_and_every_request_is_counted(
    fake_square: tuple[FakeSquare, str], square_settings: Settings
) -> None:
    fake, _ = fake_square
    seed(fake, bookings=1)
    fake.fail_next(503, times=1, path_contains="/v2/bookings")
    summary = await reconcile(
        square_settings, "square", square_window=(NOW, NOW + timedelta(days=1))
    )
    assert summary.ok, summary.errors
    assert [r.status for r in fake.requests_to("/v2/bookings")] == [503, 200]
    # RetrieveMerchant, EnableEvents, SearchEvents, SearchCustomers (which finds the booking's
    # customer, so no BulkRetrieveCustomers follows) and ListBookings twice (the SDK's retry).
    assert summary.as_json()["requests"] == 6


async def test_connection_failures_are_tried_three_times(square_settings: Settings) -> None:
    tried: list[str] = []

    def refuse(request: httpx.Request) -> httpx.Response:
        tried.append(request.url.path)
        raise httpx.ConnectError("connection refused", request=request)

    engine = create_engine(square_settings.require_database_url(), pool_size=1)
    summary = RunSummary("square")
    try:
        transport = httpx.MockTransport(refuse)
        async with SquareReader.from_settings(square_settings, transport=transport) as reader:
            await reconcile_square(engine, reader, SquareWindow(NOW, NOW + timedelta(1)), summary)
    finally:
        await engine.dispose()
    assert [e.record for e in summary.errors] == ["merchant:me"]
    assert "SquareUnreachableError" in summary.errors[0].error
    assert tried == ["/v2/merchants/me"] * 3  # ours: 3 tries (the SDK leaves these alone)
    assert summary.details["requests"] == 3


async def test_the_run_metrics_show_the_breaker_the_run_ended_with(
    fake_square: tuple[FakeSquare, str], square_settings: Settings, tmp_path: Path
) -> None:
    fake, _ = fake_square
    seed(fake, bookings=1)
    fake.fail_next(500, times=1000, path_contains="/v2/bookings")
    settings = square_settings.model_copy(
        update={"square_breaker_threshold": 1, "metrics_textfile_dir": tmp_path}
    )
    metrics = RunMetrics()
    summary = await reconcile(
        settings,
        "square",
        square_window=(NOW - timedelta(days=40), NOW),
        breakers=metrics.breakers,
    )
    assert [e.record for e in summary.errors][-1] == "run"
    path = export_run(settings, summary, metrics)
    assert path is not None
    found = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(path.read_text())
        for s in family.samples
    }
    assert found[("sluice_provider_breaker_state", (("provider", "square"),))] == 2
