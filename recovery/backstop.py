"""What both backstop reconcilers (Square, Airtable) run on: how a run stops, how an error is
kept to the record it belongs to, how a page of synthetic events is written, and how the events
are marked as the reconciler's.

A run goes on past any one record: an error is the record's (`summary.error("booking:<id>",
exc)`) and the next record is tried. It stops, keeping what is done, only when it cannot go on:
the provider is cut off by its circuit breaker or the database is gone. Then `StopRun` carries
the cause to where the run ends (`except ENDS_THE_RUN`), which reports it as the error of the
run (`run`). Counts and the run's duration are kept by the summary (recovery/summary.py).
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal, TypeVar

from schemas.origins import SYNTHETIC_HEADER, SYNTHETIC_MARK
from sluice.db import DatabaseUnavailableError
from sluice.resilience import CircuitOpenError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator, Sequence

    from recovery.summary import RunSummary

T = TypeVar("T")


def synthetic_headers() -> dict[str, str]:
    return {SYNTHETIC_HEADER: SYNTHETIC_MARK}


def synthetic_body_mark(
    reason: Literal["missing", "stale"], run_id: str
) -> dict[str, dict[str, str]]:
    """The `sluice_synthetic` field of an event body the reconciler writes in a provider's own
    envelope: why it was written, and by which run."""
    return {"sluice_synthetic": {"by": SYNTHETIC_MARK, "reason": reason, "run": run_id}}


class StopRun(Exception):  # noqa: N818 - control flow, not an error kind
    """The provider or the database is gone: end the run, keeping what is done."""


def stop_if_it_ends_the_run(exc: BaseException) -> None:
    """StopRun when the run cannot go on after `exc`: the provider is cut off by its breaker,
    or the database is gone."""
    if isinstance(exc, CircuitOpenError | DatabaseUnavailableError):
        raise StopRun from exc


@contextlib.contextmanager
def isolated(summary: RunSummary, record: str) -> Iterator[None]:
    """An error in the block is `record`'s, and the run goes on after it; unless it ends the
    run, which goes on as StopRun."""
    try:
        yield
    except StopRun:
        raise
    except Exception as exc:  # noqa: BLE001 - the record's error, unless it ends the run
        stop_if_it_ends_the_run(exc)
        summary.error(record, exc)


# What a run ends on, where it ends: StopRun carrying its cause, or an outage met unwrapped.
ENDS_THE_RUN = (StopRun, CircuitOpenError, DatabaseUnavailableError)


def end_run(summary: RunSummary, exc: BaseException) -> None:
    """The run stops here: its cause is the error of the run."""
    summary.error("run", (exc.__cause__ if isinstance(exc, StopRun) else None) or exc)


async def write_isolated(
    write: Callable[[Sequence[T]], Awaitable[None]],
    items: Sequence[T],
    summary: RunSummary,
    record_of: Callable[[T], str],
) -> None:
    """`write(items)` in one go (one transaction); if that fails for a reason other than an
    outage, item by item, so that the record the database refuses is the only one lost."""
    try:
        await write(items)
    except DatabaseUnavailableError as exc:
        raise StopRun from exc
    except Exception:  # noqa: BLE001 - isolate the record that the database refuses
        for item in items:
            try:
                await write([item])
            except DatabaseUnavailableError as exc:
                raise StopRun from exc
            except Exception as exc:  # noqa: BLE001
                summary.error(record_of(item), exc)


def iso(value: datetime) -> str:
    """A time as the summaries and synthetic events show it: UTC, ISO 8601, with a `Z`."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
