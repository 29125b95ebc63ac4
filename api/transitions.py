"""Which work status a job may move to from which. Anything else is refused with 409."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

    from schemas.app_api import WorkStatus

ALLOWED: Mapping[str, frozenset[WorkStatus]] = {
    "scheduled": frozenset({"en_route", "in_progress", "cancelled", "no_show"}),
    "en_route": frozenset({"scheduled", "in_progress", "cancelled", "no_show"}),
    "in_progress": frozenset({"on_hold", "completed"}),
    "on_hold": frozenset({"in_progress", "cancelled"}),
    # Reopened when something turns out unfinished (see post_completion_issue).
    "completed": frozenset({"in_progress"}),
    "cancelled": frozenset({"scheduled"}),
    "no_show": frozenset({"scheduled"}),
}


def allowed_from(current: str) -> list[str]:
    return sorted(ALLOWED.get(current, frozenset()))


def is_allowed(current: str, wanted: str) -> bool:
    return wanted in ALLOWED.get(current, frozenset())
