"""Checks that an argument list is a command `sluice` accepts, without running it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer

from commands.main import app
from consumers.registry import CONSUMERS

if TYPE_CHECKING:
    from collections.abc import Sequence


class CommandRefusedError(Exception):
    """`sluice` would refuse these arguments (unknown command or option, missing argument)."""


def check_sluice_command(args: Sequence[str]) -> None:
    """Parse `args` as the `sluice` CLI would: walk the command groups, then let the command
    parse its options and arguments (typer's click does the checking; nothing runs).
    """
    command: Any = typer.main.get_command(app)
    context = command.context_class(command, info_name="sluice")
    rest = list(args)
    while hasattr(command, "list_commands"):  # a group
        if not rest:
            raise CommandRefusedError(f"{' '.join(args)!r} names a group, not a command")
        name, *rest = rest
        sub = command.get_command(context, name)
        if sub is None:
            raise CommandRefusedError(f"no command {name!r} in {' '.join(args)!r}")
        command = sub
        context = command.context_class(command, info_name=name, parent=context)
    try:
        # The parser consumes the list it is given: hand it a copy.
        with command.make_context(context.info_name, list(rest), parent=context.parent):
            pass
    except Exception as exc:  # click's UsageError family, from typer's bundled click
        raise CommandRefusedError(f"{' '.join(args)!r}: {exc}") from exc
    if args[0] == "consume" and rest and rest[0] not in CONSUMERS:
        raise CommandRefusedError(f"no consumer {rest[0]!r}; choose one of {', '.join(CONSUMERS)}")
