"""How the relay waits and what it says while a dependency is down.

Retries back off exponentially with jitter (sluice/resilience.py's Backoff), so relays that lost
the same broker do not come back in lockstep. The relay logs when its
state changes (healthy → kafka_down → healthy), not on every attempt, so an outage of an hour is
two log lines rather than thousands.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Literal

import structlog

log = structlog.get_logger(__name__)

RelayState = Literal[
    "starting", "healthy", "kafka_down", "database_down", "topic_missing", "publish_refused"
]


class StateTracker:
    """The relay's current state; logs each change once, with how long the last state lasted."""

    def __init__(self, **context: object) -> None:
        self.state: RelayState = "starting"
        self.history: deque[RelayState] = deque(["starting"], maxlen=100)  # what was logged
        self._since = time.monotonic()
        self._log = log.bind(**context)

    def set(self, state: RelayState, reason: str | None = None) -> None:
        if state == self.state:
            return
        now = time.monotonic()
        previous, lasted = self.state, now - self._since
        self.state, self._since = state, now
        self.history.append(state)
        if state == "healthy":
            self._log.info("relay.state", state=state, previous=previous, after_s=round(lasted, 1))
        else:
            self._log.warning("relay.state", state=state, previous=previous, reason=reason)
