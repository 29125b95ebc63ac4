"""The chaos harness in its short mode (`bench/chaos.py --short`): the whole pipeline as
processes, every component SIGKILLed, the broker stopped for 30 s, PostgreSQL crashed, staff
edits in between; the run exits 0 only if nothing was lost, applied twice or overwritten.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

HARNESS = Path(__file__).resolve().parent.parent / "bench" / "chaos.py"


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
    assert "lost (2xx answered, effect missing)" in result.stdout
