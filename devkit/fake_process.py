"""A fake provider API as a process of its own (`sluice <provider> fake-api`), as `sluice dev`
and the chaos run start the fake Square and the fake Airtable."""

from __future__ import annotations

import subprocess
import sys
import time
from typing import TYPE_CHECKING

import httpx

from devkit.embedded import die_with_parent, free_port

if TYPE_CHECKING:
    from collections.abc import Callable


def start_fake_api(
    provider: str, first_request: Callable[[str], httpx.Response], *, timeout: float = 20
) -> tuple[subprocess.Popen[bytes], str]:
    """The fake on a free port, and its URL, once `first_request(url)` got an answer (tried
    again while the process is not listening yet, for up to `timeout` seconds). A 4xx or 5xx
    ends the start as an error; the process is stopped if the start fails."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(  # noqa: S603 - our own CLI
        [sys.executable, "-m", "sluice", provider, "fake-api", "--port", str(port)],
        preexec_fn=die_with_parent,  # noqa: PLW1509 - before any thread
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                first_request(url).raise_for_status()
            except httpx.TransportError:
                if time.monotonic() >= deadline:
                    raise RuntimeError(f"the fake {provider} API did not start") from None
                time.sleep(0.1)
            else:
                return process, url
    except BaseException:
        process.terminate()
        raise
