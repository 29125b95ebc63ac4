from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import httpx
from typer.testing import CliRunner

from commands.main import app
from devkit.simulate import signed_square_delivery, square_event
from schemas.envelope import CloudEvent
from schemas.square import SquareEvent
from tests.support.square import SIGNATURE_KEY, WEBHOOK_URL

if TYPE_CHECKING:
    from pathlib import Path

    import psycopg


def test_schemas_export_writes_one_schema_per_topic(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["schemas", "export", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    written = sorted(p.name for p in tmp_path.iterdir())
    assert "square.bookings.schema.json" in written
    schema = json.loads((tmp_path / "square.bookings.schema.json").read_text())
    assert {"id", "source", "type", "time", "data", "providereventid"} <= set(schema["required"])


async def test_stored_payload_matches_the_published_contract(
    ingest_url: str, db: psycopg.Connection[tuple[Any, ...]]
) -> None:
    body, headers = signed_square_delivery(
        square_event("booking.updated", version=7), key=SIGNATURE_KEY, url=WEBHOOK_URL
    )
    async with httpx.AsyncClient(base_url=ingest_url) as http:
        assert (await http.post("/webhooks/square", content=body, headers=headers)).is_success
    row = db.execute("SELECT payload FROM outbox").fetchone()
    assert row is not None
    event = CloudEvent[SquareEvent].model_validate(row[0])
    assert event.data.data.id.endswith(":7")
    assert event.subject == event.data.entity_id
