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

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx

from devkit.fake_process import start_fake_api
from devkit.fakes.square import FakeSquare

if TYPE_CHECKING:
    import subprocess

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
    headers = {"authorization": f"Bearer {FAKE_TOKEN}"}
    # Its first request is EnableEvents, as an operator enables event search once.
    process, url = start_fake_api(
        "square", lambda url: httpx.put(f"{url}/v2/events/enable", headers=headers, timeout=1)
    )
    return DevSquare(
        process=process,
        env={"SQUARE_API_URL": url, "SQUARE_ACCESS_TOKEN": FAKE_TOKEN},
        info={
            "square_fake_api_url": url,
            "square_fake_token": FAKE_TOKEN,
            "square_event_search": "enabled",
        },
    )
