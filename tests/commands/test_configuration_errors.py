"""A configuration error ends any command with one line naming the setting and how to set it,
and exit 2; and the commands run beside a live `sluice dev` find its settings in `dev.env`."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest
from typer.testing import CliRunner

from commands.main import app
from devkit.dev_state import running_dev_env_file, write_dev_env

if TYPE_CHECKING:
    from pathlib import Path

# Every setting a command might read from this process's environment, cleared for the test.
CLEARED: dict[str, str | None] = dict.fromkeys(
    ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS", "AIRTABLE_API_KEY", "SLUICE_API_TOKEN")
)

COMMANDS = [
    ["dlq", "list"],
    ["migrate"],
    ["reconcile", "square"],
    ["replay", "store", "--source", "square"],
    ["paused"],
    ["topics", "ensure"],
    ["airtable", "webhooks", "list"],
]


@pytest.fixture(autouse=True)
def _elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In an empty directory: no `.env`, no `sluice dev` state."""
    monkeypatch.chdir(tmp_path)


@pytest.mark.parametrize("args", COMMANDS, ids=" ".join)
def test_a_missing_setting_is_one_line_and_exit_2(args: list[str]) -> None:
    result = CliRunner().invoke(app, args, env=CLEARED)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    [line] = lines
    assert line.startswith("sluice: ")
    assert any(name in line for name in CLEARED), line
    assert "set " in line
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("setting", "value", "says"),
    [
        ("SLUICE_ADMIN_TOKEN", "changeme", "placeholder"),
        ("SLUICE_API_TOKEN", "xxx", "placeholder"),
        ("SLUICE_TOPIC_PARTITIONS", "twelve", "valid integer"),
        ("SQUARE_ENVIRONMENT", "staging", "production"),
        ("DATABASE_URL", "mysql://db/x", "postgresql://"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_setting_and_exit_2(
    setting: str, value: str, says: str
) -> None:
    for args in (
        ["dlq", "list"],
        ["replay", "kafka", "--topic", "t", "--group", "g", "--shift", "1"],
    ):
        result = CliRunner().invoke(app, args, env={**CLEARED, setting: value})
        assert result.exit_code == 2, result.output
        [line] = result.stderr.strip().splitlines()
        assert line.startswith(f"sluice: {setting} is not valid")
        assert says in line
        assert f"set {setting}" in line


def test_the_real_command_prints_no_traceback_either(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in CLEARED}
    done = subprocess.run(
        [sys.executable, "-m", "sluice", "dlq", "list"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 2
    expected = (
        "sluice: DATABASE_URL is not set: set DATABASE_URL in the environment or in a .env file, "
        "or run this beside a running `sluice dev`"
    )
    assert done.stderr.strip().splitlines() == [expected]


def test_a_dotenv_file_in_the_working_directory_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text('SLUICE_TOPIC_PARTITIONS="many"\n')
    result = CliRunner().invoke(app, ["dlq", "list"], env=CLEARED)
    assert result.exit_code == 2
    assert "SLUICE_TOPIC_PARTITIONS is not valid" in result.stderr


def test_commands_beside_a_running_dev_use_its_settings(tmp_path: Path, database_url: str) -> None:
    state = tmp_path / ".sluice"
    state.mkdir()
    write_dev_env(state, {"DATABASE_URL": database_url, "PATH": "/not/a/setting"})
    assert running_dev_env_file(state) == state / "dev.env"
    assert "PATH" not in (state / "dev.env").read_text()
    result = CliRunner().invoke(app, ["dlq", "list"], env=CLEARED)
    assert result.exit_code == 0, result.output
    # The environment still wins over the file.
    result = CliRunner().invoke(app, ["dlq", "list"], env={**CLEARED, "DATABASE_URL": "x://y"})
    assert result.exit_code == 2


def test_the_state_of_a_dev_that_no_longer_runs_is_ignored(
    tmp_path: Path, database_url: str
) -> None:
    state = tmp_path / ".sluice"
    state.mkdir()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    write_dev_env(state, {"DATABASE_URL": database_url}, pid=gone.pid)
    assert running_dev_env_file(state) is None
    result = CliRunner().invoke(app, ["dlq", "list"], env=CLEARED)
    assert result.exit_code == 2
    assert "DATABASE_URL is not set" in result.stderr
