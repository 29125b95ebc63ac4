"""SearchEvents (`POST /v2/events`) over the fake Square's event log.

What Square documents and the fake does: only events of the last 28 days are returned (an older
`start_at` is accepted and simply finds nothing older); only events made while search was
enabled are ever returned; `limit` is 1 to 100, 100 by default; a cursor works only with the
query it came from. The cursor also pins the log as it was on the first page, so events made
while a client pages do not shift its pages (they are found by the next search).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from devkit.fakes.square.wire import (
    SquareBadRequest,
    body_limit,
    encode_cursor,
    member,
    query_fingerprint,
    search_cursor,
    strings,
    time_range,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from devkit.fakes.square.wire import TimeBounds

RETENTION = timedelta(days=28)
SORT_ORDERS = ("ASC", "DESC")


@dataclass(frozen=True, slots=True)
class LoggedEvent:
    body: dict[str, Any]  # the envelope, exactly as a webhook would carry it
    at: datetime
    searchable: bool  # made while search was enabled


def search_events(
    log: Sequence[LoggedEvent], body: dict[str, Any], *, now: datetime, api_version: str
) -> dict[str, Any]:
    """The SearchEvents answer for `body`; raises SquareBadRequest for bad input."""
    limit = body_limit(body)
    query = member(body, "query", "query")
    wanted = _Filter.parse(member(query, "filter", "query.filter"))
    newest_first = _newest_first(member(query, "sort", "query.sort"))
    state = search_cursor(body, query)
    offset, pinned = 0, len(log)
    if state is not None:
        offset, pinned = state["o"], state.get("n", len(log))
        if not isinstance(pinned, int) or not 0 <= pinned <= len(log):
            raise SquareBadRequest("INVALID_CURSOR", "The cursor is invalid.", "cursor")
    horizon = now - RETENTION
    matching = [e for e in log[:pinned] if e.searchable and e.at >= horizon and wanted.holds(e)]
    # By `created_at`; events of the same moment stay in the order they were made.
    matching.sort(key=lambda e: e.at)
    if newest_first:
        matching.reverse()
    page = matching[offset : offset + limit]
    if not page:
        return {}
    answer: dict[str, Any] = {
        "events": [e.body for e in page],
        "metadata": [{"event_id": e.body["event_id"], "api_version": api_version} for e in page],
    }
    if offset + limit < len(matching):
        state = {"o": offset + limit, "n": pinned, "q": query_fingerprint(query)}
        answer["cursor"] = encode_cursor(state)
    return answer


@dataclass(frozen=True, slots=True)
class _Filter:
    event_types: list[str] | None
    merchant_ids: list[str] | None
    location_ids: list[str] | None
    created_at: TimeBounds | None

    @classmethod
    def parse(cls, raw: dict[str, Any]) -> _Filter:
        path = "query.filter"
        return cls(
            strings(raw, "event_types", f"{path}.event_types"),
            strings(raw, "merchant_ids", f"{path}.merchant_ids"),
            strings(raw, "location_ids", f"{path}.location_ids"),
            time_range(raw, "created_at", f"{path}.created_at"),
        )

    def holds(self, event: LoggedEvent) -> bool:
        body = event.body
        return (
            (self.event_types is None or body["type"] in self.event_types)
            and (self.merchant_ids is None or body["merchant_id"] in self.merchant_ids)
            and (self.location_ids is None or body.get("location_id") in self.location_ids)
            and (self.created_at is None or self.created_at.holds(event.at))
        )


def _newest_first(sort: dict[str, Any]) -> bool:
    # SearchEventsSortField has one value, DEFAULT: by `created_at`.
    if sort.get("field") not in (None, "DEFAULT"):
        raise SquareBadRequest(
            "INVALID_ENUM_VALUE", "`query.sort.field` must be DEFAULT.", "query.sort.field"
        )
    order = sort.get("order")
    if order not in (None, *SORT_ORDERS):
        raise SquareBadRequest(
            "INVALID_SORT_ORDER", "`query.sort.order` must be ASC or DESC.", "query.sort.order"
        )
    return order != "ASC"
