"""`sluice serve`, `sluice api` and `sluice admin` as processes of their own, as deployed."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from devkit.embedded import free_port
from tests.support.square import SIGNATURE_KEY, WEBHOOK_URL

if TYPE_CHECKING:
    from collections.abc import Iterator


@contextlib.contextmanager
def sluice_server(
    command: list[str], database_url: str, log: Path, **env: str
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Run `sluice <command> --host 127.0.0.1 --port P` until /healthz answers; its base URL."""
    port = free_port()
    environment = {
        **os.environ,
        "DATABASE_URL": database_url,
        "SQUARE_WEBHOOK_SIGNATURE_KEYS": SIGNATURE_KEY,
        "SQUARE_WEBHOOK_URL": WEBHOOK_URL,
        "SLUICE_LOG_FORMAT": "json",
        "SLUICE_LOG_LEVEL": "warning",
        **env,
    }
    base = f"http://127.0.0.1:{port}"
    with log.open("ab") as output:
        process = subprocess.Popen(  # noqa: S603 - our own command, with our own arguments
            [sys.executable, "-m", "sluice", *command, "--host", "127.0.0.1", "--port", str(port)],
            env=environment,
            stdout=output,
            stderr=output,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"sluice {command[0]} exited: {log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"sluice {command[0]} did not answer /healthz")
            time.sleep(0.1)
        yield base, process
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def rss_bytes(pid: int) -> int:
    """The process's resident set size, from /proc/<pid>/status (VmRSS, in kB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")
