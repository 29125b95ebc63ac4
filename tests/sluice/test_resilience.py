"""The one resilience mechanism: the circuit breaker's states and hook, and the retry policy."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from typing import TYPE_CHECKING, Any

import pytest
import stamina
from prometheus_client import CollectorRegistry

from consumers.airtable_writeback import AirtableWriteback
from consumers.registry import build_projection
from providers.airtable import AirtableRateLimitedError, AirtableUnavailableError
from sluice.errors import InvalidInputError, TransientError
from sluice.resilience import (
    BreakerChange,
    BreakerReport,
    BreakerState,
    CircuitBreaker,
    CircuitOpenError,
    ProviderCalls,
    RetryPolicy,
)
from sluice.settings import Settings

if TYPE_CHECKING:
    from collections.abc import Callable

CLOSED, HALF_OPEN, OPEN = BreakerState.CLOSED, BreakerState.HALF_OPEN, BreakerState.OPEN


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class OutageError(TransientError):
    pass


class BadRecordError(InvalidInputError):
    pass


def breaker(clock: Clock, changes: list[BreakerChange] | None = None, **options: Any) -> Any:
    hook: Callable[[BreakerChange], None] = (changes if changes is not None else []).append
    options.setdefault("threshold", 3)
    return CircuitBreaker("test", reset_seconds=30, clock=clock, on_change=hook, **options)


async def fail(exc: Exception) -> None:
    raise exc


async def ok() -> str:
    return "ok"


async def test_opens_after_threshold_counted_failures_in_a_row() -> None:
    clock = Clock()
    b = breaker(clock)
    for _ in range(2):
        with pytest.raises(OutageError):
            await b.call(lambda: fail(OutageError()))
    assert await b.call(ok) == "ok"  # a success starts the count again
    for _ in range(2):
        with pytest.raises(OutageError):
            await b.call(lambda: fail(OutageError()))
    with pytest.raises(BadRecordError):  # not the provider's fault: neither counts nor resets
        await b.call(lambda: fail(BadRecordError()))
    assert b.state is CLOSED
    with pytest.raises(OutageError):
        await b.call(lambda: fail(OutageError()))
    assert b.state is OPEN
    called = False

    async def never() -> None:
        nonlocal called
        called = True

    with pytest.raises(CircuitOpenError):
        await b.call(never)
    assert not called


async def test_half_open_lets_exactly_one_trial_through_while_others_are_refused() -> None:
    clock = Clock()
    changes: list[BreakerChange] = []
    b = breaker(clock, changes, threshold=1)
    with pytest.raises(OutageError):
        await b.call(lambda: fail(OutageError()))
    clock.now += 29.9
    assert b.state is OPEN
    clock.now += 0.1
    assert b.state is HALF_OPEN

    release = asyncio.Event()
    entered = 0

    async def trial() -> str:
        nonlocal entered
        entered += 1
        await release.wait()
        return "probed"

    first = asyncio.create_task(b.call(trial))
    await asyncio.sleep(0)  # the trial is in flight
    others = await asyncio.gather(*(b.call(trial) for _ in range(5)), return_exceptions=True)
    assert all(isinstance(o, CircuitOpenError) for o in others)
    assert "trial" in str(others[0])
    assert entered == 1
    release.set()
    assert await first == "probed"
    assert b.state is CLOSED
    assert await asyncio.gather(*(b.call(ok) for _ in range(3))) == ["ok"] * 3
    assert [(c.before, c.after) for c in changes] == [
        (None, CLOSED),
        (CLOSED, OPEN),
        (OPEN, HALF_OPEN),
        (HALF_OPEN, CLOSED),
    ]


async def test_a_failed_trial_opens_the_breaker_for_another_reset_period() -> None:
    clock = Clock()
    b = breaker(clock, threshold=1)
    with pytest.raises(OutageError):
        await b.call(lambda: fail(OutageError()))
    clock.now += 30
    with pytest.raises(OutageError):
        await b.call(lambda: fail(OutageError()))  # the trial
    assert b.state is OPEN
    clock.now += 29
    with pytest.raises(CircuitOpenError):
        await b.call(ok)
    clock.now += 1
    assert await b.call(ok) == "ok"
    assert b.state is CLOSED


async def test_a_trial_the_provider_answers_closes_and_a_cancelled_one_leaves_it_half_open() -> (
    None
):
    clock = Clock()
    b = breaker(clock, threshold=1)
    with pytest.raises(OutageError):
        await b.call(lambda: fail(OutageError()))
    clock.now += 30
    started = asyncio.Event()

    async def hangs() -> None:
        started.set()
        await asyncio.Event().wait()

    trial = asyncio.create_task(b.call(hangs))
    await started.wait()
    trial.cancel()
    with pytest.raises(asyncio.CancelledError):
        await trial
    assert b.state is HALF_OPEN  # nothing learnt: the next caller is the trial
    with pytest.raises(BadRecordError):  # a 4xx: the provider answered
        await b.call(lambda: fail(BadRecordError()))
    assert b.state is CLOSED


async def test_the_hook_logs_each_change_and_sets_the_gauge(
    capsys: pytest.CaptureFixture[str],
) -> None:
    registry = CollectorRegistry()
    clock = Clock()
    b = CircuitBreaker(
        "airtable",
        threshold=1,
        reset_seconds=30,
        clock=clock,
        on_change=BreakerReport(registry),
    )

    def gauge() -> float | None:
        return registry.get_sample_value("sluice_provider_breaker_state", {"provider": "airtable"})

    capsys.readouterr()
    assert gauge() == 0  # a new breaker shows closed at once
    with pytest.raises(OutageError):
        await b.call(lambda: fail(OutageError()))
    assert gauge() == 2
    clock.now += 30
    assert b.state is HALF_OPEN
    assert gauge() == 1
    await b.call(ok)
    assert gauge() == 0

    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line]
    changes = [line for line in lines if line["event"] == "breaker.state_changed"]
    assert [(c["provider"], c["from"], c["to"], c["level"]) for c in changes] == [
        ("airtable", "closed", "open", "warning"),
        ("airtable", "open", "half_open", "warning"),
        ("airtable", "half_open", "closed", "warning"),
    ]


def test_the_write_back_consumer_reports_its_breaker_into_its_registry(database_url: str) -> None:
    registry = CollectorRegistry()
    settings = Settings(
        DATABASE_URL=database_url,
        AIRTABLE_API_KEY="patTEST.0123456789",
        AIRTABLE_BREAKER_THRESHOLD=2,
        AIRTABLE_BREAKER_RESET_SECONDS=7,
    )
    projection = build_projection(
        "airtable-writeback", settings=settings, breakers=BreakerReport(registry)
    )
    assert isinstance(projection, AirtableWriteback)
    assert registry.get_sample_value("sluice_provider_breaker_state", {"provider": "airtable"}) == 0
    b = projection._breaker
    assert (b.provider, b.threshold, b.reset_seconds) == ("airtable", 2, 7)


async def test_provider_calls_count_once_against_the_breaker_after_their_retries() -> None:
    clock = Clock()
    b = breaker(clock, threshold=2)
    calls = ProviderCalls(b, RetryPolicy(attempts=3, retry_on=OutageError))
    tries = 0

    async def down() -> None:
        nonlocal tries
        tries += 1
        raise OutageError

    with pytest.raises(OutageError):
        await calls(down)
    assert (tries, b.state) == (3, CLOSED)
    with pytest.raises(OutageError):
        await calls(down)
    assert (tries, b.state) == (6, OPEN)
    with pytest.raises(CircuitOpenError):
        await calls(down)
    assert tries == 6


async def test_only_the_policys_errors_are_retried() -> None:
    policy = RetryPolicy(attempts=4, retry_on=AirtableUnavailableError)
    seen: list[str] = []

    async def answers(*errors: Exception) -> str:
        if len(seen) < len(errors):
            error = errors[len(seen)]
            seen.append(type(error).__name__)
            raise error
        seen.append("ok")
        return "done"

    limited = AirtableRateLimitedError("app1", 0.0)
    assert await policy.call(lambda: answers(AirtableUnavailableError("503"), limited)) == "done"
    assert seen == ["AirtableUnavailableError", "AirtableRateLimitedError", "ok"]
    seen.clear()
    with pytest.raises(BadRecordError):
        await policy.call(lambda: answers(BadRecordError()))
    assert seen == ["BadRecordError"]  # never retried
    seen.clear()
    with pytest.raises(AirtableUnavailableError):
        await policy.call(lambda: answers(*(AirtableUnavailableError("503") for _ in range(9))))
    assert len(seen) == 4  # the policy's tries, not the test mode's cap


async def test_retries_really_wait_outside_test_mode() -> None:
    policy = RetryPolicy(
        attempts=3, retry_on=OutageError, wait_initial=0.05, wait_max=1, wait_jitter=0
    )
    tried_at: list[float] = []

    async def flaky() -> str:
        tried_at.append(time.monotonic())
        if len(tried_at) < 3:
            raise OutageError
        return "up"

    with stamina.set_testing(False):
        assert await policy.call(flaky) == "up"
    gaps = [later - earlier for earlier, later in itertools.pairwise(tried_at)]
    assert gaps[0] >= 0.05
    assert gaps[1] >= 0.1  # doubled


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, (5, 30.0, 5, 30.0)),
        (
            {
                "SQUARE_BREAKER_THRESHOLD": "2",
                "SQUARE_BREAKER_RESET_SECONDS": "12.5",
                "AIRTABLE_BREAKER_THRESHOLD": "9",
                "AIRTABLE_BREAKER_RESET_SECONDS": "60",
            },
            (2, 12.5, 9, 60.0),
        ),
    ],
)
def test_breaker_settings_for_both_providers(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: tuple[Any, ...]
) -> None:
    for name, setting in env.items():
        monkeypatch.setenv(name, setting)
    s = Settings()
    assert (
        s.square_breaker_threshold,
        s.square_breaker_reset_seconds,
        s.airtable_breaker_threshold,
        s.airtable_breaker_reset_seconds,
    ) == expected


@pytest.mark.parametrize(
    "env",
    [
        {"SQUARE_BREAKER_THRESHOLD": "0"},
        {"SQUARE_BREAKER_RESET_SECONDS": "0"},
        {"SQUARE_BREAKER_RESET_SECONDS": "3601"},
        {"AIRTABLE_BREAKER_THRESHOLD": "1001"},
    ],
)
def test_breaker_settings_out_of_bounds_are_refused(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str]
) -> None:
    for name, setting in env.items():
        monkeypatch.setenv(name, setting)
    with pytest.raises(ValueError, match=r"(?i)breaker"):
        Settings()
