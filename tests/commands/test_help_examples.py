"""Every command's `--help` shows an example, and every example is a valid command line."""

from __future__ import annotations

import shlex
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from commands.examples import EXAMPLES
from commands.main import app


def leaves(command: Any, path: tuple[str, ...] = ()) -> dict[str, Any]:
    if hasattr(command, "commands"):
        found: dict[str, Any] = {}
        for name, sub in command.commands.items():
            found |= leaves(sub, (*path, name))
        return found
    return {" ".join(path): command}


COMMANDS = leaves(typer.main.get_command(app))


def test_every_command_has_examples_and_every_example_a_command() -> None:
    assert len(COMMANDS) > 20
    assert set(COMMANDS) == set(EXAMPLES)


@pytest.mark.parametrize("path", sorted(COMMANDS))
def test_help_shows_the_examples(path: str) -> None:
    shown = CliRunner().invoke(app, [*path.split(), "--help"], terminal_width=200)
    assert shown.exit_code == 0, shown.output
    assert "Example" in shown.output
    for line in EXAMPLES[path]:
        assert shlex.split(line)[-1] in shown.output


@pytest.mark.parametrize("path", sorted(COMMANDS))
def test_each_example_parses_as_its_command(path: str) -> None:
    command = COMMANDS[path]
    for line in EXAMPLES[path]:
        words = shlex.split(line)
        assert words[: 1 + len(path.split())] == ["sluice", *path.split()], line
        # Parsing checks every option name, type and choice without running the command.
        context = command.make_context(path, words[1 + len(path.split()) :])
        assert context.params is not None
