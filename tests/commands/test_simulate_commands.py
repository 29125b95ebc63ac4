"""`sluice simulate square` sends as the targeted deployment's Square environment would: the
running dev's, unless `--environment` says otherwise."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

from typer.testing import CliRunner

from commands.main import app
from devkit.embedded import free_port
from ingest.app import create_app
from sluice.settings import Settings
from tests.support.services import running_server
from tests.support.square import SIGNATURE_KEY

if TYPE_CHECKING:
    from pathlib import Path

    import psycopg


def simulate(state_dir: Path, *options: str) -> tuple[int, list[dict[str, Any]]]:
    args = ["simulate", "square", "booking.created", "--state-dir", str(state_dir), *options]
    result = CliRunner().invoke(app, args)
    return result.exit_code, [json.loads(line) for line in result.stdout.splitlines()]


async def test_simulate_sends_the_dev_environment_unless_told(
    database_url: str, db: psycopg.Connection[Any], tmp_path: Path
) -> None:
    port = free_port()
    target = f"http://127.0.0.1:{port}/webhooks/square"  # simulate signs over its target
    settings = Settings(
        DATABASE_URL=database_url,
        SQUARE_ENVIRONMENT="sandbox",
        SQUARE_WEBHOOK_SIGNATURE_KEYS=SIGNATURE_KEY,
        SQUARE_WEBHOOK_URL=target,
    )

    def dev_info(environment: str) -> None:
        info = {
            "square_webhook_url": target,
            "square_signature_key": SIGNATURE_KEY,
            "square_environment": environment,
        }
        (tmp_path / "dev.json").write_text(json.dumps(info))

    async with running_server(create_app(settings), port=port):
        dev_info("sandbox")
        code, answers = await asyncio.to_thread(simulate, tmp_path)
        assert (code, answers[0]["status"]) == (0, 200)
        code, answers = await asyncio.to_thread(simulate, tmp_path, "--environment", "production")
        assert (code, answers[0]["status"]) == (1, 422)
        assert answers[0]["response"]["error"] == "wrong_environment"
        dev_info("production")  # a dev of the other environment: its deliveries say so
        code, answers = await asyncio.to_thread(simulate, tmp_path)
        assert (code, answers[0]["status"]) == (1, 422)
    rows = db.execute("SELECT headers->>'square-environment' FROM inbound_events").fetchall()
    assert rows == [("Sandbox",)]
