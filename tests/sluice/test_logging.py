"""Library logs go through structlog: with SLUICE_LOG_FORMAT=json every line a component writes
is JSON, uvicorn's, aiokafka's and alembic's included; in console mode they read like ours."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

import pytest
import structlog

from devkit.embedded import free_port
from sluice.logging import configure_logging
from tests.support.servers import sluice_server
from tests.support.square import SIGNATURE_KEY, WEBHOOK_URL

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


@pytest.fixture
def _logging_restored() -> Iterator[None]:
    yield
    configure_logging("json", "warning")  # as the suite runs (conftest.py)


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every line of `text` as JSON: fails on the first line that is not."""
    lines = []
    for line in text.splitlines():
        if line.strip():
            try:
                lines.append(json.loads(line))
            except ValueError:
                pytest.fail(f"not a JSON line: {line!r}")
    return lines


@pytest.mark.usefixtures("_logging_restored")
def test_a_library_record_is_a_json_line_with_our_fields(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("json", "info")
    configure_logging("json", "info")  # configured again (each invocation does): one handler
    with structlog.contextvars.bound_contextvars(source="square"):
        logging.getLogger("uvicorn.error").info("Started server process [%d]", 42)
        try:
            raise ValueError("broken")  # noqa: TRY301 - an exception to log
        except ValueError:
            logging.getLogger("aiokafka").exception("Unable connect to %s", "127.0.0.1:1")
        logging.getLogger("alembic.runtime.migration").debug("below the level")
        structlog.get_logger("ours").info("ours.event", n=1)
    started, failed, ours = json_lines(capsys.readouterr().err)
    assert started | {"timestamp": None} == {
        "event": "Started server process [42]",
        "level": "info",
        "logger": "uvicorn.error",
        "source": "square",
        "timestamp": None,
    }
    assert failed["level"] == "error"
    assert failed["event"] == "Unable connect to 127.0.0.1:1"
    assert "ValueError: broken" in failed["exception"]
    assert set(ours) == {"event", "n", "level", "source", "timestamp"}


@pytest.mark.usefixtures("_logging_restored")
def test_console_mode_shows_library_records_like_ours(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("console", "info")
    logging.getLogger("uvicorn.error").warning("Invalid HTTP request received.")
    (line,) = capsys.readouterr().err.splitlines()
    assert "Invalid HTTP request received." in line
    assert "warning" in line
    assert "uvicorn.error" in line
    with pytest.raises(ValueError, match="Expecting value"):
        json.loads(line)


@pytest.mark.usefixtures("_logging_restored")
@pytest.mark.parametrize(
    ("logger", "message"),
    [
        ("httpx", 'HTTP Request: GET http://x "HTTP/1.1 200 OK"'),
        ("aiokafka.consumer.group_coordinator", "(Re-)joining group sluice.jobs"),
    ],
)
def test_library_info_lines_that_repeat_ours_show_only_at_debug(
    logger: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("json", "info")
    logging.getLogger(logger).info(message)
    logging.getLogger(logger).warning("still shown")
    assert [line["event"] for line in json_lines(capsys.readouterr().err)] == ["still shown"]
    configure_logging("json", "debug")
    logging.getLogger(logger).info(message)
    assert json_lines(capsys.readouterr().err)[0]["event"] == message


def component_env(database_url: str, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "SLUICE_LOG_FORMAT": "json",
        "SLUICE_LOG_LEVEL": "info",
        **extra,
    }


@pytest.mark.slow
def test_sluice_serve_writes_only_json_lines_its_warning_and_uvicorns_included(
    database_url: str, tmp_path: Path
) -> None:
    log = tmp_path / "serve.log"  # its stdout and stderr
    # Without a signature key, so that it warns at start.
    unverified = {"SQUARE_WEBHOOK_SIGNATURE_KEYS": "", "SLUICE_LOG_LEVEL": "info"}
    with sluice_server(["serve"], database_url, log, **unverified):
        pass
    lines = json_lines(log.read_text())
    assert "serve.square_not_configured" in [line["event"] for line in lines]
    uvicorn = [line["event"] for line in lines if line.get("logger") == "uvicorn.error"]
    assert any(event.startswith("Uvicorn running on http://127.0.0.1:") for event in uvicorn)
    assert "Application startup complete." in uvicorn
    assert "Finished server process" in " ".join(uvicorn)


@pytest.mark.slow
def test_a_consumer_with_kafka_unreachable_writes_only_json_lines_aiokafkas_included(
    database_url: str, tmp_path: Path
) -> None:
    log = tmp_path / "consumer.log"
    closed = f"127.0.0.1:{free_port()}"
    with log.open("ab") as output:
        consumer = subprocess.Popen(
            [sys.executable, "-m", "sluice", "consume", "jobs"],
            env=component_env(
                database_url,
                KAFKA_BOOTSTRAP_SERVERS=closed,
                SQUARE_WEBHOOK_SIGNATURE_KEYS=SIGNATURE_KEY,
                SQUARE_WEBHOOK_URL=WEBHOOK_URL,
            ),
            stdout=output,
            stderr=output,
        )
    try:
        deadline = time.monotonic() + 30
        while "Unable connect to" not in log.read_text() and time.monotonic() < deadline:
            assert consumer.poll() is None, log.read_text()[-2000:]
            time.sleep(0.2)
    finally:
        # Only what it logged while retrying is looked at: killed, it writes nothing more.
        consumer.send_signal(signal.SIGKILL)
        consumer.wait()
    lines = json_lines(log.read_text())
    aiokafka = [line for line in lines if str(line.get("logger", "")).startswith("aiokafka")]
    assert any(
        line["level"] == "error" and line["event"].startswith(f'Unable connect to "{closed}"')
        for line in aiokafka
    )
    assert any(line["event"] == "consumer.retrying" for line in lines)


@pytest.mark.slow
def test_sluice_migrate_logs_alembic_as_json_and_prints_its_answer(database_url: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "sluice", "migrate"],
        env=component_env(database_url),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert done.stdout == "migrations applied\n"
    alembic = [line for line in json_lines(done.stderr) if "alembic" in line.get("logger", "")]
    assert "Will assume transactional DDL." in [line["event"] for line in alembic]
