"""Waiting for the pipeline: the one way the tests wait for something to become true."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable


async def eventually(
    check: Callable[[], bool],
    within: float = 30.0,
    what: str = "the condition",
    interval: float = 0.02,
) -> None:
    """Return once `check()` is true; fail the test if it is not within `within` seconds."""
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(interval)
