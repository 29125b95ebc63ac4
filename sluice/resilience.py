"""Calling out politely and coming back after an outage: one mechanism per concern, as values.

- `Backoff`: exponential backoff with jitter for loops that retry until they succeed (the relay,
  the consumer runtime, the LISTEN connection) and for delays counted elsewhere (a lead's push
  attempts). The only jitter sluice draws itself.
- `RetryPolicy`: the retries of one bounded call (a provider request), through stamina (built on
  tenacity): how many tries in all, which errors, how long between. `stamina.set_testing` takes
  the waits out in tests and keeps the tries.
- `CircuitBreaker`: closed, open after `threshold` counted failures in a row, half-open once
  `reset_seconds` have passed, when exactly one trial call goes through (others are refused while
  it is in flight); its success closes the breaker, its failure opens it for another
  `reset_seconds`. Every change goes to a hook; `BreakerReport` logs it and sets
  `sluice_provider_breaker_state` where the component exports metrics.
- `ProviderCalls`: a provider's breaker around its retry policy, which every bounded call to a
  provider goes through. A call counts once against the breaker, after its retries.
- `RateLimiter`: an even request rate (Square's).

The squareup SDK retries 408/409/429/5xx itself (providers/square.py); nothing here repeats that.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING, Protocol, TypeVar

import stamina
import structlog

from sluice.errors import TransientError
from sluice.metrics import gauge

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from prometheus_client import CollectorRegistry

log = structlog.get_logger(__name__)

T = TypeVar("T")


class CircuitOpenError(TransientError):
    """The provider failed too often in a row; calls are refused until the breaker cools down."""


class Backoff:
    """Exponential backoff with jitter: wait n is drawn between half and all of
    min(cap, base * 2**n), so waiters that failed together do not return together, and no wait
    shrinks to nothing. `delay(n)` for a count kept elsewhere (a record's attempts);
    `next_delay()` and `reset()` for a loop that retries until it succeeds (the relay, the
    consumer, the LISTEN connection)."""

    def __init__(self, base_seconds: float = 0.5, cap_seconds: float = 30.0) -> None:
        self.base_seconds = base_seconds
        self.cap_seconds = cap_seconds
        self._attempt = 0

    def delay(self, attempt: int) -> float:
        ceiling = min(self.cap_seconds, self.base_seconds * 2 ** min(attempt, 60))
        return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not security

    def next_delay(self) -> float:
        delay = self.delay(self._attempt)
        self._attempt += 1
        return delay

    def reset(self) -> None:
        self._attempt = 0


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Up to `attempts` tries in all of one call, retrying only errors of type `retry_on`.

    Waits grow from `wait_initial` (doubling each time) up to `wait_max`, each plus up to
    `wait_jitter` at random (stamina's backoff). Anything else raised ends the call at once.
    """

    attempts: int
    retry_on: type[Exception] | tuple[type[Exception], ...] = TransientError
    wait_initial: float = 0.5
    wait_max: float = 30.0
    wait_jitter: float = 0.5

    async def call(self, attempt: Callable[[], Awaitable[T]]) -> T:
        async for trying in stamina.retry_context(
            on=self.retry_on,
            attempts=self.attempts,
            timeout=None,
            wait_initial=self.wait_initial,
            wait_max=self.wait_max,
            wait_jitter=self.wait_jitter,
        ):
            with trying:
                return await attempt()
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises


class BreakerState(IntEnum):
    """A circuit breaker's state; the values are those of `sluice_provider_breaker_state`."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


@dataclass(frozen=True, slots=True)
class BreakerChange:
    provider: str
    before: BreakerState | None  # None: the breaker's first state, when it is made
    after: BreakerState


class StateHook(Protocol):
    def __call__(self, change: BreakerChange, /) -> None: ...


class BreakerReport:
    """The state-change hook: one `breaker.state_changed` line per change (provider, from, to)
    and, given the component's metrics registry, `sluice_provider_breaker_state{provider}`.
    One report serves every breaker of a component."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self._gauge = None if registry is None else gauge("sluice_provider_breaker_state", registry)

    def __call__(self, change: BreakerChange, /) -> None:
        if self._gauge is not None:
            self._gauge.labels(change.provider).set(int(change.after))
        if change.before is None:
            return  # a new breaker, closed: nothing changed
        # Warning whichever way it goes: at the usual level an operator who saw it open must
        # also see it close again.
        log.warning(
            "breaker.state_changed",
            provider=change.provider,
            **{"from": change.before.name.lower(), "to": change.after.name.lower()},
        )


def _transient(exc: Exception) -> bool:
    return isinstance(exc, TransientError)


class CircuitBreaker:
    """Closed → open after `threshold` counted failures in a row → half-open after
    `reset_seconds` → one trial call → closed (it succeeded) or open again (it failed).

    Only failures that say the provider is unwell count (`counts`, by default any
    TransientError): a 404 for one record is that record's problem, not the provider's. A trial
    that ends in an error that does not count (the provider answered) closes the breaker; a
    trial that is cancelled leaves it half-open for the next caller.
    """

    def __init__(  # noqa: PLR0913 - the breaker's parts, by keyword
        self,
        provider: str,
        *,
        threshold: int = 5,
        reset_seconds: float = 30.0,
        counts: Callable[[Exception], bool] = _transient,
        on_change: StateHook | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.provider = provider
        self.threshold = threshold
        self.reset_seconds = reset_seconds
        self._counts = counts
        self._on_change = on_change or BreakerReport()
        self._clock = clock
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._trial_in_flight = False
        self._on_change(BreakerChange(provider, None, BreakerState.CLOSED))

    @property
    def state(self) -> BreakerState:
        if (
            self._state is BreakerState.OPEN
            and self._clock() - self._opened_at >= self.reset_seconds
        ):
            self._move(BreakerState.HALF_OPEN)
        return self._state

    async def call(self, attempt: Callable[[], Awaitable[T]]) -> T:
        trial = self._admit()
        try:
            result = await attempt()
        except Exception as exc:
            self._failed(exc, trial=trial)
            raise
        except BaseException:  # cancelled: says nothing about the provider
            if trial:
                self._trial_in_flight = False
            raise
        self._succeeded(trial=trial)
        return result

    def _admit(self) -> bool:
        """True when this call is the half-open state's one trial; raises if it may not go."""
        state = self.state
        if state is BreakerState.CLOSED:
            return False
        if state is BreakerState.HALF_OPEN and not self._trial_in_flight:
            self._trial_in_flight = True
            return True
        why = "a trial call is in flight" if state is BreakerState.HALF_OPEN else "open"
        raise CircuitOpenError(
            f"{self.provider} failed {self._failures} times in a row; not calling it for now"
            f" ({why})"
        )

    def _failed(self, exc: Exception, *, trial: bool) -> None:
        if trial:
            self._trial_in_flight = False
        if not self._counts(exc):
            if trial:  # the provider answered the trial: it is up
                self._close()
            return
        self._failures += 1
        if trial or (self._state is BreakerState.CLOSED and self._failures >= self.threshold):
            self._opened_at = self._clock()
            self._move(BreakerState.OPEN)

    def _succeeded(self, *, trial: bool) -> None:
        if trial:
            self._trial_in_flight = False
            self._close()
        elif self._state is BreakerState.CLOSED:
            self._failures = 0
        # A call let through before the breaker opened that succeeds late decides nothing:
        # the trial does.

    def _close(self) -> None:
        self._failures = 0
        self._move(BreakerState.CLOSED)

    def _move(self, state: BreakerState) -> None:
        before, self._state = self._state, state
        if before is not state:
            self._on_change(BreakerChange(self.provider, before, state))


@dataclass(frozen=True, slots=True)
class ProviderCalls:
    """Bounded calls to one provider: retried by `retry`, through `breaker`."""

    breaker: CircuitBreaker
    retry: RetryPolicy

    async def __call__(self, attempt: Callable[[], Awaitable[T]]) -> T:
        return await self.breaker.call(lambda: self.retry.call(attempt))


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
