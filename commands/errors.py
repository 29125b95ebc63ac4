"""How a configuration error ends a command: one line per setting, naming it and how to set it,
and exit 2 (as for bad usage). A traceback is left for what is a bug."""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperGroup

from commands.context import InvalidSettingsError
from sluice.settings import SettingError

EXIT_CONFIGURATION = 2


class SluiceGroup(TyperGroup):
    """The root group: every command, however deep, runs inside its invoke."""

    def invoke(self, ctx: Any) -> Any:  # noqa: ANN401 - click's own signature
        try:
            return super().invoke(ctx)
        except InvalidSettingsError as exc:
            for error in exc.errors:
                typer.echo(f"sluice: {error}", err=True)
        except SettingError as exc:
            typer.echo(f"sluice: {exc}", err=True)
        raise typer.Exit(EXIT_CONFIGURATION)
