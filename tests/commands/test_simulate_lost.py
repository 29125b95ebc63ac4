"""`sluice simulate square --lost`: the event happens at the dev's fake Square but is never
delivered; `sluice reconcile square`, run as an operator would, finds it through SearchEvents and
stores it as recovered. Real servers throughout: ingest, the fake Square, PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

from typer.testing import CliRunner

from commands.main import app
from devkit.embedded import free_port
from devkit.fakes.square import FakeSquare
from devkit.simulate import SIMULATED_LOCATION_ID, SIMULATED_MERCHANT_ID
from ingest.app import create_app
from sluice.settings import Settings
from tests.support.services import running_server
from tests.support.square import SIGNATURE_KEY

if TYPE_CHECKING:
    from pathlib import Path

    import psycopg
    from typer.testing import Result


def sluice(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(app, list(args), env=env)


def json_lines(result: Result) -> list[dict[str, Any]]:
    return [json.loads(line) for line in result.stdout.splitlines()]


async def test_a_lost_booking_is_only_at_square_until_reconcile_recovers_it(
    database_url: str, db: psycopg.Connection[Any], tmp_path: Path
) -> None:
    port = free_port()
    target = f"http://127.0.0.1:{port}/webhooks/square"
    settings = Settings(
        DATABASE_URL=database_url,
        SQUARE_WEBHOOK_SIGNATURE_KEYS=SIGNATURE_KEY,
        SQUARE_WEBHOOK_URL=target,
    )
    # As `sluice dev` runs it: the simulated merchant, event search enabled before any event.
    fake = FakeSquare(
        merchant_id=SIMULATED_MERCHANT_ID, location_id=SIMULATED_LOCATION_ID, search_enabled=True
    )
    state = str(tmp_path)
    async with (
        running_server(create_app(settings), port=port),
        running_server(fake.app) as fake_url,
    ):
        info = {
            "square_webhook_url": target,
            "square_signature_key": SIGNATURE_KEY,
            "square_environment": "production",
            "square_fake_api_url": fake_url,
        }
        (tmp_path / "dev.json").write_text(json.dumps(info))

        lost = await asyncio.to_thread(
            sluice, "simulate", "square", "booking.created", "--lost", "--state-dir", state
        )
        assert lost.exit_code == 0, lost.output
        (recorded,) = json_lines(lost)  # recorded, and no delivery attempted
        assert recorded["recorded_in_fake_square"] == 200
        assert "never delivered" in lost.stderr
        assert "sluice reconcile square" in lost.stderr
        delivered = await asyncio.to_thread(
            sluice, "simulate", "square", "customer.created", "--state-dir", state
        )
        assert delivered.exit_code == 0, delivered.output
        assert [line.get("status") for line in json_lines(delivered)] == [None, 200]

        lost_id, delivered_id = recorded["event_id"], json_lines(delivered)[0]["event_id"]
        assert recorded["entity_id"] in fake.bookings
        assert {e["event_id"] for e in fake.events} == {lost_id, delivered_id}
        assert stored(db) == {delivered_id: None}

        operator = {
            "DATABASE_URL": database_url,
            "SQUARE_API_URL": fake_url,
            "SQUARE_ACCESS_TOKEN": fake.token,
        }
        reconciled = await asyncio.to_thread(sluice, "reconcile", "square", env=operator)
    assert reconciled.exit_code == 0, reconciled.output
    summary = json.loads(reconciled.stdout)
    assert summary["passes"]["events"]["recorded"] == 1
    rows = stored(db)
    # The lost one, found through the Events API, under its own event id; the delivered one
    # once: the search's copy of it is a duplicate.
    assert rows[lost_id] == "square-events-api"
    assert rows[delivered_id] is None


def stored(db: psycopg.Connection[Any]) -> dict[str, str | None]:
    """Square events by provider event id (each at most once), with their recovery mark."""
    rows = db.execute(
        "SELECT provider_event_id, headers->>'sluice-recovered' FROM inbound_events"
        " WHERE source = 'square' AND provider_event_id NOT LIKE 'reconcile:%'"
    ).fetchall()
    found = dict(rows)
    assert len(found) == len(rows)
    return found


def test_lost_without_a_dev_fake_square_is_a_clear_error(tmp_path: Path) -> None:
    info = {"square_webhook_url": "http://127.0.0.1:9/webhooks/square", "square_signature_key": "k"}
    (tmp_path / "dev.json").write_text(json.dumps(info))
    result = sluice("simulate", "square", "booking.created", "--lost", "--state-dir", str(tmp_path))
    assert result.exit_code == 2
    assert "fake Square" in result.output
    assert "SQUARE_API_URL" in result.output
