"""What `sluice dev` runs is what a deployment runs: every long-running component it starts has a
Deployment in Kubernetes and a service in compose, with the same command. The fake providers are
the exception, by name: they stand in for Square and Airtable in development only."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from consumers.registry import CONSUMERS
from devkit.dev import dev_components
from tests.support.kustomize import render
from tests.support.paths import ROOT

# The fakes `sluice dev` starts (under these names) when no real provider is configured.
DEV_ONLY = {
    "square-fake-api": ("square", "fake-api"),
    "airtable-fake-api": ("airtable", "fake-api"),
}


def command_of(args: list[str]) -> tuple[str, ...]:
    """The command an argument list names, without its options: `consume jobs`, `serve`."""
    words: list[str] = []
    for arg in args:
        if arg.startswith("-"):
            break
        words.append(arg)
    return tuple(words)


def dev_commands() -> dict[str, tuple[str, ...]]:
    """What `sluice dev` runs that a deployment must run too: all but the fakes."""
    return {
        name: command_of(args)
        for name, args in dev_components(8000)
        if name not in DEV_ONLY and command_of(args) not in DEV_ONLY.values()
    }


def kubernetes_commands() -> dict[tuple[str, ...], str]:
    objects = render(ROOT / "deploy" / "k8s" / "overlays" / "example")
    return {
        command_of(container["args"]): obj["metadata"]["name"]
        for obj in objects
        if obj["kind"] == "Deployment"
        for container in obj["spec"]["template"]["spec"]["containers"]
    }


def compose_commands() -> dict[tuple[str, ...], str]:
    document = yaml.safe_load((ROOT / "deploy" / "compose" / "compose.yaml").read_text())
    services: dict[str, Any] = document["services"]
    return {
        command_of(service["command"]): name
        for name, service in services.items()
        if service.get("image") == "sluice:dev" and service.get("restart") != "no"
    }


def test_the_components_are_the_whole_pipeline() -> None:
    commands = set(dev_commands().values())
    assert {("serve",), ("relay",), ("admin",), ("api",)} <= commands
    assert {("consume", name) for name in CONSUMERS} <= commands


@pytest.mark.parametrize("name", list(dev_commands()))
def test_every_component_of_sluice_dev_is_deployed_by_kubernetes_and_compose(name: str) -> None:
    command = dev_commands()[name]
    assert command in kubernetes_commands(), (
        f"{name}: no Deployment runs `sluice {' '.join(command)}`"
    )
    assert command in compose_commands(), f"{name}: no compose service runs it"


def test_no_fake_provider_is_deployed_to_kubernetes() -> None:
    assert not set(DEV_ONLY.values()) & set(kubernetes_commands())
