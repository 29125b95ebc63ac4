"""Calling a provider politely: a rate limit, retries with jittered backoff, a circuit breaker.

The squareup SDK already retries 408/409/429/5xx responses (twice, honouring `Retry-After`), so
nothing here repeats that. What is left to us: connection failures (the SDK does not retry them),
a request rate we keep ourselves, and a breaker that stops a run when the provider keeps failing
instead of hammering it for every remaining page.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

T = TypeVar("T")


class CircuitOpenError(Exception):
    """The provider failed too often in a row; calls are refused until the breaker cools down."""


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with full jitter: attempt n waits uniform(0, min(cap, base * 2**n))."""

    base_seconds: float = 0.5
    cap_seconds: float = 30.0

    def delay(self, attempt: int) -> float:
        ceiling = min(self.cap_seconds, self.base_seconds * 2**attempt)
        return random.uniform(0, ceiling)  # noqa: S311 - jitter, not security


class RateLimiter:
    """At most `per_second` calls per second, spaced evenly (no bursts)."""

    def __init__(self, per_second: float) -> None:
        self._interval = 1.0 / per_second
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        async with self._lock:
            now = time.monotonic()
            wait = self._next - now
            self._next = max(now, self._next) + self._interval
        if wait > 0:
            await asyncio.sleep(wait)


class CircuitBreaker:
    """Opens after `threshold` failures in a row; lets one trial call through after `reset_seconds`.

    Only failures that say the provider is unwell count (see `counts`): a 404 for one record is
    that record's problem, not the provider's.
    """

    def __init__(
        self,
        *,
        threshold: int = 5,
        reset_seconds: float = 30.0,
        counts: Callable[[BaseException], bool] = lambda _exc: True,
    ) -> None:
        self._threshold = threshold
        self._reset_seconds = reset_seconds
        self._counts = counts
        self._failures = 0
        self._opened_at: float | None = None

    @property
    def is_open(self) -> bool:
        if self._opened_at is None:
            return False
        return time.monotonic() - self._opened_at < self._reset_seconds

    async def call(self, attempt: Callable[[], Awaitable[T]]) -> T:
        if self.is_open:
            raise CircuitOpenError(
                f"provider failed {self._failures} times in a row; not calling it for now"
            )
        try:
            result = await attempt()
        except Exception as exc:
            if self._counts(exc):
                self._failures += 1
                if self._failures >= self._threshold:
                    self._opened_at = time.monotonic()
            raise
        self._failures = 0
        self._opened_at = None
        return result


async def retry(
    attempt: Callable[[], Awaitable[T]],
    *,
    retry_on: tuple[type[BaseException], ...],
    attempts: int = 3,
    backoff: Backoff | None = None,
) -> T:
    """Call `attempt` until it succeeds; retry only `retry_on` errors, at most `attempts` times."""
    policy = backoff or Backoff()
    for number in range(attempts):
        try:
            return await attempt()
        except retry_on:
            if number == attempts - 1:
                raise
            await asyncio.sleep(policy.delay(number))
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises
