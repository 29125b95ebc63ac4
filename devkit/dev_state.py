"""What a running `sluice dev` leaves for the commands run beside it, in its state directory.

`dev.json` is for people and `sluice simulate` (URLs, tokens, the fake providers); `dev.env` holds
the settings every component was started with, in `.env` form, which every other `sluice`
command reads (commands/context.py) while that `sluice dev` is alive, so `sluice dlq list` in
another terminal works without exports. Both are removed when `sluice dev` stops; a file left by
one that was killed is ignored, as its first line names a process that no longer runs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from sluice.settings import Settings

if TYPE_CHECKING:
    from collections.abc import Mapping

DEFAULT_STATE_DIR = Path(".sluice")
DEV_ENV_FILE = "dev.env"
_PID_PREFIX = "# written by sluice dev, process "


def setting_names() -> frozenset[str]:
    """Every environment variable Settings reads."""
    return frozenset(
        str(field.validation_alias)
        for field in Settings.model_fields.values()
        if field.validation_alias is not None
    )


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_dev_env(state_dir: Path, env: Mapping[str, str], pid: int | None = None) -> Path:
    """The settings among `env`, as `.env` lines, readable by the owner only (tokens)."""
    names = setting_names()
    lines = [f"{_PID_PREFIX}{pid or os.getpid()}"]
    lines += [f"{key}={_quoted(value)}" for key, value in sorted(env.items()) if key in names]
    path = state_dir / DEV_ENV_FILE
    path.touch(mode=0o600)
    path.write_text("\n".join(lines) + "\n")
    return path


def remove_dev_env(state_dir: Path) -> None:
    (state_dir / DEV_ENV_FILE).unlink(missing_ok=True)


def running_dev_env_file(state_dir: Path) -> Path | None:
    """`dev.env` if the `sluice dev` that wrote it still runs."""
    path = state_dir / DEV_ENV_FILE
    try:
        first = path.read_text().split("\n", 1)[0]
    except OSError:
        return None
    pid = first.removeprefix(_PID_PREFIX)
    if first == pid or not pid.isdigit():
        return None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return path  # alive, another user's
    return path
