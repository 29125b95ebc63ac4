"""One rule for "requests made", kept where requests leave: the provider clients.

A request counts when sluice hands it to the network: every retry, ours or an SDK's, is one more,
whatever its answer (a 429 or a connection failure included); a call the circuit breaker refused
sends nothing and counts nothing. Reconcile summaries and the write-back read these counts.
"""

from __future__ import annotations

import threading


class RequestCounter:
    """Requests sent so far; safe to add to from worker threads (pyairtable runs in them)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sent = 0

    def add(self) -> None:
        with self._lock:
            self._sent += 1

    @property
    def sent(self) -> int:
        return self._sent
