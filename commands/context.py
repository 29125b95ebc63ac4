"""The settings of one `sluice` invocation, built on first use and kept for the rest of it.

Every command asks here instead of building its own: the environment is read once, validated
once, and logging is configured from it before the command does anything else. The root
command's callback starts each invocation afresh (a test's `CliRunner.invoke` included).

Besides the environment, two files are read, the environment winning over both: `.env` in the
working directory (if there is one), then the settings a running `sluice dev` wrote for the
commands run beside it (`.sluice/dev.env`, see devkit/dev_state.py), so `sluice dlq list` or
`sluice doctor` in another terminal find the dev's database, broker and tokens without exports.
"""

from __future__ import annotations

import os
import re
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from devkit.dev_state import DEFAULT_STATE_DIR, running_dev_env_file
from sluice.settings import SettingError, Settings

_current: ContextVar[Settings | None] = ContextVar("sluice_settings", default=None)

DOTENV = Path(".env")


class InvalidSettingsError(Exception):
    """The settings could not be built: one SettingError per setting at fault."""

    def __init__(self, errors: list[SettingError]) -> None:
        super().__init__("; ".join(str(e) for e in errors))
        self.errors = errors


def begin_invocation() -> None:
    """Nothing read by an earlier invocation in this process is carried over."""
    _current.set(None)


def warn_at_start(event: str, detail: str) -> None:
    """A server's warning about its configuration, on the log like every other line (in JSON
    mode, a JSON line), once settings() has configured logging."""
    import structlog  # noqa: PLC0415 - keep `--help` fast

    structlog.get_logger("commands").warning(event, detail=detail)


def settings_files(*, beside_dev: bool = True) -> tuple[Path, ...]:
    """The files settings are read from, lowest priority first (the environment beats both)."""
    files = [DOTENV] if DOTENV.is_file() else []
    state_dir = Path(os.environ.get("SLUICE_STATE_DIR") or DEFAULT_STATE_DIR)
    dev_file = running_dev_env_file(state_dir) if beside_dev else None
    if dev_file is not None:
        files.append(dev_file)
    return tuple(files)


def setting_errors(error: ValidationError) -> list[SettingError]:
    """Pydantic's report as one line per setting: its name, what is wrong, how to set it."""
    errors = []
    for item in error.errors():
        problem = str(item["msg"]).removeprefix("Value error, ")
        if item["loc"]:
            name = str(item["loc"][0])
        else:  # a rule across settings: its message names them
            named = re.search(r"\b[A-Z][A-Z0-9_]{3,}\b", problem)
            name = named.group(0) if named else "a setting"
        errors.append(SettingError(name, f"is not valid ({problem})"))
    return errors


def build_settings(*, beside_dev: bool = True, **overrides: Any) -> Settings:  # noqa: ANN401 - any setting's value
    try:
        return Settings(_env_file=settings_files(beside_dev=beside_dev), **overrides)
    except ValidationError as exc:
        raise InvalidSettingsError(setting_errors(exc)) from None


def settings(*, beside_dev: bool = True) -> Settings:
    loaded = _current.get()
    if loaded is None:
        from sluice.logging import configure_logging  # noqa: PLC0415 - keep `--help` fast

        loaded = build_settings(beside_dev=beside_dev)
        configure_logging(loaded.log_format, loaded.log_level)
        _current.set(loaded)
    return loaded


def lenient_settings() -> tuple[Settings | None, list[SettingError]]:
    """For `sluice doctor`: the settings with each invalid one at its default, and what was
    wrong with them, so one wrong setting does not hide the checks of all the others."""
    try:
        return build_settings(), []
    except InvalidSettingsError as exc:
        errors = exc.errors
    fields = {str(f.validation_alias): f for f in Settings.model_fields.values()}
    defaults = {
        e.setting: fields[e.setting].get_default(call_default_factory=True)
        for e in errors
        if e.setting in fields
    }
    try:
        return build_settings(**defaults), errors
    except InvalidSettingsError:
        return None, errors
