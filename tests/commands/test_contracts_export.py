"""The committed contracts are exactly what the models generate, and are valid documents."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from openapi_spec_validator import validate
from typer.testing import CliRunner

from commands.contracts import ASYNCAPI_FILE, OPENAPI_FILE, contract_files, stale_contracts
from commands.main import app
from commands.topic_schemas import PAYLOAD_MODELS
from schemas.topics import dlq_topic
from tests.support.paths import ROOT

if TYPE_CHECKING:
    from pathlib import Path

COMMITTED = ROOT / "schemas" / "contracts"


def test_committed_contracts_are_up_to_date(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["schemas", "export", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    fresh = {p.name: p.read_text() for p in tmp_path.iterdir()}
    committed = {p.name: p.read_text() for p in COMMITTED.glob("*.json")}
    assert sorted(committed) == sorted(fresh), "run `sluice schemas export`"
    for name, content in fresh.items():
        assert committed[name] == content, f"{name} is stale: run `sluice schemas export`"


def test_check_fails_on_a_stale_file(tmp_path: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["schemas", "export", "--out", str(tmp_path)]).exit_code == 0
    assert (
        runner.invoke(app, ["schemas", "export", "--check", "--out", str(tmp_path)]).exit_code == 0
    )
    (tmp_path / OPENAPI_FILE).write_text("{}\n")
    (tmp_path / "gone.schema.json").write_text("{}\n")
    assert stale_contracts(tmp_path) == [OPENAPI_FILE, "gone.schema.json"]
    result = runner.invoke(app, ["schemas", "export", "--check", "--out", str(tmp_path)])
    assert result.exit_code == 1


def test_asyncapi_covers_every_topic_and_its_dead_letters() -> None:
    files = contract_files()
    document = json.loads(files[ASYNCAPI_FILE])
    assert document["asyncapi"].startswith("3.")
    addresses = {channel["address"] for channel in document["channels"].values()}
    for topic in PAYLOAD_MODELS:
        assert {topic.value, dlq_topic(topic.value)} <= addresses
    for message in document["components"]["messages"].values():
        assert message["payload"]["$ref"] in files  # the payload schema file is published too
        assert "ce_id" in message["headers"]["required"]
    for operation in document["operations"].values():
        channel = operation["channel"]["$ref"].removeprefix("#/channels/")
        assert channel in document["channels"]


def test_openapi_documents_are_valid_and_cover_the_endpoints() -> None:
    files = contract_files()
    document = json.loads(files[OPENAPI_FILE])
    validate(document)
    assert {
        "/webhooks/square",
        "/webhooks/airtable",
        "/healthz",
        "/readyz",
        "/metrics",
        "/admin/reconcile/{source}",
    } <= set(document["paths"])
    for name, content in files.items():
        if name.startswith("openapi"):
            validate(json.loads(content))
