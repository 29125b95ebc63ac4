"""What a reconcile run reports: counts per entity, every error isolated to its record."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

Outcome = Literal["created", "updated", "skipped"]


@dataclass(frozen=True, slots=True)
class RecordError:
    record: str  # what failed, e.g. "booking:abc123" or "window:2025-01-01/2025-01-31"
    error: str


@dataclass(slots=True)
class Tally:
    scanned: int = 0
    created: int = 0
    updated: int = 0
    skipped: int = 0

    def count(self, outcome: Outcome, n: int = 1) -> None:
        setattr(self, outcome, getattr(self, outcome) + n)


@dataclass(slots=True)
class PassTally:
    """One pass of a run (the events searched, a sweep of bookings or customers): what it looked
    at (`scope`), and of what it scanned, how much was missing here or stale, and what it
    recorded (the rest an earlier run or a delivery had already brought)."""

    scope: dict[str, Any] = field(default_factory=dict)
    scanned: int = 0
    missing: int = 0
    stale: int = 0
    recorded: int = 0

    def as_json(self) -> dict[str, Any]:
        counts = {"scanned": self.scanned, "missing": self.missing, "stale": self.stale}
        return {**self.scope, **counts, "recorded": self.recorded}


@dataclass(slots=True)
class RunSummary:
    source: str
    by_entity: dict[str, Tally] = field(default_factory=dict)
    errors: list[RecordError] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    details: dict[str, Any] = field(default_factory=dict)
    passes: dict[str, PassTally] = field(default_factory=dict)

    def entity(self, name: str) -> Tally:
        return self.by_entity.setdefault(name, Tally())

    def pass_(self, name: str) -> PassTally:
        return self.passes.setdefault(name, PassTally())

    def error(self, record: str, error: BaseException | str) -> None:
        text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        self.errors.append(RecordError(record, text[:1000]))

    def finish(self) -> RunSummary:
        self.finished = time.monotonic()
        return self

    @property
    def ok(self) -> bool:
        return not self.errors

    def total(self, name: Outcome | Literal["scanned"]) -> int:
        return sum(getattr(t, name) for t in self.by_entity.values())

    def as_json(self) -> dict[str, Any]:
        end = self.finished if self.finished is not None else time.monotonic()
        return {
            "source": self.source,
            "scanned": self.total("scanned"),
            "created": self.total("created"),
            "updated": self.total("updated"),
            "skipped": self.total("skipped"),
            "errors": [{"record": e.record, "error": e.error} for e in self.errors],
            "duration_seconds": round(end - self.started, 3),
            "by_entity": {
                name: {
                    "scanned": t.scanned,
                    "created": t.created,
                    "updated": t.updated,
                    "skipped": t.skipped,
                }
                for name, t in sorted(self.by_entity.items())
            },
            **({"passes": {n: t.as_json() for n, t in self.passes.items()}} if self.passes else {}),
            **self.details,
        }
