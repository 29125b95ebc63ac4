"""The compose file: every sluice service runs a real command, in the right order."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from consumers.registry import CONSUMERS
from tests.support.commands import CommandRefusedError, check_sluice_command
from tests.support.paths import ROOT

COMPOSE = ROOT / "deploy" / "compose" / "compose.yaml"


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE.read_text())
    found: dict[str, Any] = document["services"]
    return found


def sluice_services(services: dict[str, Any]) -> dict[str, Any]:
    return {name: s for name, s in services.items() if s.get("image") == "sluice:dev"}


def test_every_sluice_service_runs_a_real_command(services: dict[str, Any]) -> None:
    ours = sluice_services(services)
    assert len(ours) >= 9
    for name, service in ours.items():
        try:
            check_sluice_command(service["command"])
        except CommandRefusedError as exc:
            pytest.fail(f"{name}: {exc}")


def test_every_component_is_there(services: dict[str, Any]) -> None:
    commands = [tuple(s["command"][:2]) for s in sluice_services(services).values()]
    for name in CONSUMERS:
        assert ("consume", name) in commands
    for first in ("migrate", "relay", "serve", "admin", "api"):
        assert any(c[0] == first for c in commands), first
    assert ("topics", "ensure") in commands
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert "controller" in services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"]


def test_migrate_first_then_topics_then_the_rest(services: dict[str, Any]) -> None:
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    topics = services["topics"]["depends_on"]
    assert topics["migrate"]["condition"] == "service_completed_successfully"
    assert topics["kafka"]["condition"] == "service_healthy"
    for name, service in sluice_services(services).items():
        if name in ("migrate", "topics", "airtable-fake-api"):
            continue
        depends = service["depends_on"]
        assert depends["topics"]["condition"] == "service_completed_successfully", name


def test_containers_are_locked_down(services: dict[str, Any]) -> None:
    for name, service in sluice_services(services).items():
        assert service["read_only"] is True, name
        assert service["cap_drop"] == ["ALL"], name


def test_every_published_port_is_where_its_service_listens(services: dict[str, Any]) -> None:
    published = {name: s for name, s in sluice_services(services).items() if "ports" in s}
    assert {"ingest", "admin", "api"} <= set(published)
    for name, service in published.items():
        command = service["command"]
        listens = command[command.index("--port") + 1]
        assert [mapping.rsplit(":", 1)[-1] for mapping in service["ports"]] == [listens], name
        check = service.get("healthcheck", {}).get("test")
        if check is not None:
            assert f"127.0.0.1:{listens}/" in " ".join(check), name
