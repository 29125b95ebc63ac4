"""Square in `sluice dev` (and in the chaos run): with no SQUARE_API_URL, the fake API runs as a
component.

The fake is the merchant `sluice simulate square` sends events for (devkit.simulate), so what
is simulated and what the fake holds agree. Once it answers, event search is enabled in it, as
an operator enables it once for an application (`PUT /v2/events/enable`): events are
searchable only from then on, so a lost delivery made later is found by the Events API pass of
`sluice reconcile square`. Its URL and token go into the environment of every component, as an
operator would configure them against real Square.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx

from devkit.embedded import die_with_parent, free_port
from devkit.fakes.square import FakeSquare

if TYPE_CHECKING:
    from sluice.settings import Settings

FAKE_TOKEN = FakeSquare.token


@dataclass
class DevSquare:
    process: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


def start_dev_square(settings: Settings) -> DevSquare:
    if settings.square_api_url is not None:
        return DevSquare()  # a real (or own) Square API: configured by the operator
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(  # noqa: S603 - our own CLI
        [sys.executable, "-m", "sluice", "square", "fake-api", "--port", str(port)],
        preexec_fn=die_with_parent,  # noqa: PLW1509 - before any thread
        start_new_session=True,
    )
    try:
        _enable_event_search(url)
    except BaseException:
        process.terminate()
        raise
    return DevSquare(
        process=process,
        env={"SQUARE_API_URL": url, "SQUARE_ACCESS_TOKEN": FAKE_TOKEN},
        info={
            "square_fake_api_url": url,
            "square_fake_token": FAKE_TOKEN,
            "square_event_search": "enabled",
        },
    )


def _enable_event_search(url: str, timeout: float = 20) -> None:
    """EnableEvents, once the fake answers."""
    deadline = time.monotonic() + timeout
    headers = {"authorization": f"Bearer {FAKE_TOKEN}"}
    while time.monotonic() < deadline:
        try:
            response = httpx.put(f"{url}/v2/events/enable", headers=headers, timeout=1)
        except httpx.HTTPError:
            time.sleep(0.1)
            continue
        response.raise_for_status()
        return
    raise RuntimeError("the fake Square API did not start")
