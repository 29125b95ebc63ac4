"""What both reconcilers run on (recovery/backstop.py): an error is its record's and the run goes
on; an outage stops the run, keeping what is done, and is reported as the error of the run."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from recovery.backstop import (
    ENDS_THE_RUN,
    StopRun,
    end_run,
    isolated,
    synthetic_body_mark,
    synthetic_headers,
    write_isolated,
)
from recovery.summary import RunSummary
from sluice.db import DatabaseUnavailableError
from sluice.resilience import CircuitOpenError

if TYPE_CHECKING:
    from collections.abc import Sequence


def test_an_error_is_its_records_and_the_run_goes_on() -> None:
    summary = RunSummary("square")
    done = []
    for booking in ("a", "b", "c"):
        with isolated(summary, f"booking:{booking}"):
            if booking == "b":
                raise ValueError("no version")
            done.append(booking)
    assert done == ["a", "c"]
    assert [(e.record, e.error) for e in summary.errors] == [
        ("booking:b", "ValueError: no version")
    ]


@pytest.mark.parametrize("outage", [CircuitOpenError("open"), DatabaseUnavailableError("gone")])
def test_an_outage_ends_the_run_as_the_error_of_the_run(outage: Exception) -> None:
    summary = RunSummary("airtable")
    # A record inside a record (a lead of a table): neither keeps the outage to itself.
    with (
        pytest.raises(StopRun) as stopped,
        isolated(summary, "table:app/tbl"),
        isolated(summary, "lead:rec1"),
    ):
        raise outage
    assert stopped.value.__cause__ is outage
    assert isinstance(stopped.value, ENDS_THE_RUN)
    end_run(summary, stopped.value)
    assert [(e.record, e.error) for e in summary.errors] == [
        ("run", f"{type(outage).__name__}: {outage}")
    ]


def test_an_outage_met_outside_any_record_ends_the_run_too() -> None:
    summary = RunSummary("square")
    try:
        raise DatabaseUnavailableError("gone")
    except ENDS_THE_RUN as exc:
        end_run(summary, exc)
    assert [e.record for e in summary.errors] == ["run"]


async def test_a_refused_batch_is_written_item_by_item() -> None:
    summary = RunSummary("square")
    written: list[list[str]] = []

    async def write(batch: Sequence[str]) -> None:
        if "bad" in batch:
            raise ValueError(f"refused {len(batch)}")
        written.append(list(batch))

    await write_isolated(write, ["one", "bad", "two"], summary, lambda item: f"booking:{item}")
    assert written == [["one"], ["two"]]
    assert [(e.record, e.error) for e in summary.errors] == [
        ("booking:bad", "ValueError: refused 1")
    ]


@pytest.mark.parametrize("fails_on", ["batch", "item"])
async def test_the_database_gone_while_writing_stops_the_run(fails_on: str) -> None:
    summary = RunSummary("airtable")

    async def write(batch: Sequence[str]) -> None:
        if fails_on == "batch" or len(batch) == 1:
            raise DatabaseUnavailableError("gone")
        raise ValueError("refused")

    with pytest.raises(StopRun) as stopped:
        await write_isolated(write, ["one", "two"], summary, str)
    assert isinstance(stopped.value.__cause__, DatabaseUnavailableError)
    assert summary.errors == []


def test_synthetic_events_are_marked_in_headers_and_body() -> None:
    assert synthetic_headers() == {"sluice-synthetic": "reconcile"}
    assert synthetic_body_mark("stale", "run1") == {
        "sluice_synthetic": {"by": "reconcile", "reason": "stale", "run": "run1"}
    }
