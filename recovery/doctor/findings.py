"""What `sluice doctor` reports: one verdict per line, and the runner that keeps checks apart.

Each check runs on its own, under its own time limit: one that fails, raises or hangs becomes a
`fail` line, and the others still run, so one look shows everything that is wrong.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sluice.settings import Settings

Verdict = Literal["ok", "warn", "fail"]


@dataclass(frozen=True, slots=True)
class Finding:
    verdict: Verdict
    what: str  # the thing checked: "database", "topic square.bookings", "SLUICE_ADMIN_TOKEN"
    detail: str
    fix: str | None = None

    def line(self) -> str:
        fix = f"  -> {self.fix}" if self.fix else ""
        return f"{self.verdict:<5} {self.what:<34} {self.detail}{fix}"

    def as_json(self) -> dict[str, str | None]:
        return {"verdict": self.verdict, "what": self.what, "detail": self.detail, "fix": self.fix}


def ok(what: str, detail: str) -> Finding:
    return Finding("ok", what, detail)


def warn(what: str, detail: str, fix: str | None = None) -> Finding:
    return Finding("warn", what, detail, fix)


def fail(what: str, detail: str, fix: str | None = None) -> Finding:
    return Finding("fail", what, detail, fix)


Check = Callable[["Settings"], Awaitable[list[Finding]]]


@dataclass(frozen=True, slots=True)
class NamedCheck:
    name: str
    run: Check


async def _isolated(check: NamedCheck, settings: Settings, limit: float) -> list[Finding]:
    try:
        async with asyncio.timeout(limit):
            return await check.run(settings)
    except TimeoutError:
        return [fail(check.name, f"no answer within {limit:g} s", "is it reachable from here?")]
    except Exception as exc:  # noqa: BLE001 - a check's failure is a finding, never the end
        first_line = (str(exc).strip().splitlines() or [""])[0]
        return [fail(check.name, f"{type(exc).__name__}: {first_line}"[:300])]


async def run_checks(
    settings: Settings,
    checks: Sequence[NamedCheck],
    *,
    timeout: float = 10.0,  # noqa: ASYNC109 - each check's own limit, not the call's
) -> list[Finding]:
    """Every check at once, each isolated and time-limited; findings in the checks' order."""
    results = await asyncio.gather(*(_isolated(c, settings, timeout) for c in checks))
    return [finding for findings in results for finding in findings]


def failed(findings: Sequence[Finding]) -> bool:
    return any(f.verdict == "fail" for f in findings)
