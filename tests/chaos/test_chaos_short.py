"""The chaos harness in its short mode (`bench/chaos.py --short`): the whole pipeline as
processes, every component SIGKILLed, the broker stopped for 30 s, PostgreSQL crashed, staff
edits in between, a share of Square's events never delivered (then `sluice reconcile square
--ahead`); the run exits 0 only if nothing was lost, applied twice or overwritten.
"""

from __future__ import annotations

import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

from tests.support.paths import ROOT

if TYPE_CHECKING:
    from pathlib import Path

HARNESS = ROOT / "bench" / "chaos.py"


@pytest.mark.slow
@pytest.mark.chaos
def test_short_chaos_run_loses_nothing(tmp_path: Path) -> None:
    result = subprocess.run(  # noqa: S603 - our own script
        [sys.executable, str(HARNESS), "--short", "--state-dir", str(tmp_path / "chaos")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    assert "chaos run PASSED" in result.stdout
    figures = table(result.stdout)
    # Every failure count the run checks is there, and is 0.
    failures = [
        "valid deliveries refused (4xx)",
        "deliveries never answered",
        "lost (2xx answered, effect missing)",
        "never delivered, not recovered by reconcile",
        "applied twice",
        "app-owned fields overwritten",
        "outbox rows stuck",
        "dead letters",
        "staff calls refused (not 404)",
        "operator commands failed",
    ]
    assert {name: figures[name] for name in failures} == dict.fromkeys(failures, "0")
    # And the run did what it says: every delivery answered 2xx, components really killed.
    sent = int(figures["deliveries sent (each event 3 times)"])
    assert sent > 0
    assert int(figures["2xx answered"]) == sent
    assert int(figures["components SIGKILLed"]) >= 7
    # Square really dropped events, and the operator's reconcile ran and recorded some.
    assert int(figures["Square events never delivered"]) > 0
    recorded = figures["reconcile square --ahead recorded (by pass)"].split(" / ")
    assert sum(int(part.split()[-1]) for part in recorded) > 0


def table(stdout: str) -> dict[str, str]:
    """The figures the run prints, two spaces or more between name and value."""
    rows = (line.strip().rsplit("  ", 1) for line in stdout.splitlines() if "  " in line.strip())
    return {name.strip(): value.strip() for name, value in rows}
