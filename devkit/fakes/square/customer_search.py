"""SearchCustomers (`POST /v2/customers/search`) over the fake Square's customers.

Filters the fake knows: `created_at`, `updated_at` (time ranges, both ends inclusive),
`creation_source` (`values`, `rule` INCLUDE|EXCLUDE), `email_address` and `reference_id`
(`exact`, case-insensitive, or `fuzzy`: every token of the query in the value). Any other
filter is refused with a 400 that names it, never silently ignored. Sort: `field` DEFAULT (by
given and family name, else company name, email, phone) or CREATED_AT; `order` ASC by default.
Only profiles with public information are returned; no match answers `{}`, as Square does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from devkit.fakes.square.wire import (
    SquareBadRequest,
    body_limit,
    encode_cursor,
    member,
    parse_time,
    query_fingerprint,
    search_cursor,
    strings,
    time_range,
)

if TYPE_CHECKING:
    from collections.abc import Iterable

    from devkit.fakes.square.wire import TimeBounds

_KNOWN_FILTERS = ("created_at", "updated_at", "creation_source", "email_address", "reference_id")
_PUBLIC = ("given_name", "family_name", "company_name", "email_address", "phone_number")
_TOKEN = re.compile(r"[^\W_]+")


def search_customers(customers: Iterable[dict[str, Any]], body: dict[str, Any]) -> dict[str, Any]:
    """The SearchCustomers answer for `body`; raises SquareBadRequest for bad input."""
    limit = body_limit(body)
    query = member(body, "query", "query")
    wanted = _Filter.parse(member(query, "filter", "query.filter"))
    sort_key, descending = _sort(member(query, "sort", "query.sort"))
    count = body.get("count", False)
    if not isinstance(count, bool):
        raise SquareBadRequest("EXPECTED_BOOLEAN", "Expected `count` to be a boolean.", "count")
    state = search_cursor(body, query)
    offset = 0 if state is None else state["o"]
    matching = [c for c in customers if any(c.get(k) for k in _PUBLIC) and wanted.holds(c)]
    matching.sort(key=sort_key, reverse=descending)
    page = matching[offset : offset + limit]
    answer: dict[str, Any] = {"customers": page} if page else {}
    if page and offset + limit < len(matching):
        answer["cursor"] = encode_cursor({"o": offset + limit, "q": query_fingerprint(query)})
    if count:
        answer["count"] = len(matching)
    return answer


@dataclass(frozen=True, slots=True)
class _Text:
    exact: str | None
    fuzzy: list[str] | None

    @classmethod
    def parse(cls, raw: dict[str, Any], path: str) -> _Text | None:
        if not raw:
            return None
        exact, fuzzy = raw.get("exact"), raw.get("fuzzy")
        if exact is not None and fuzzy is not None:
            raise SquareBadRequest(
                "CONFLICTING_PARAMETERS", f"`{path}` can be exact or fuzzy, not both.", path
            )
        for name, value in (("exact", exact), ("fuzzy", fuzzy)):
            if value is not None and not isinstance(value, str):
                raise SquareBadRequest(
                    "EXPECTED_STRING", f"Expected `{path}.{name}` to be a string.", f"{path}.{name}"
                )
        if exact is None and fuzzy is None:
            raise SquareBadRequest(
                "MISSING_REQUIRED_PARAMETER", f"`{path}` needs exact or fuzzy.", path
            )
        return cls(exact, None if fuzzy is None else _tokens(fuzzy))

    def holds(self, value: str | None) -> bool:
        if value is None:
            return False
        if self.exact is not None:
            return value.casefold() == self.exact.casefold()
        have = _tokens(value)
        return all(any(token in word for word in have) for token in self.fuzzy or ())


@dataclass(frozen=True, slots=True)
class _Filter:
    created_at: TimeBounds | None
    updated_at: TimeBounds | None
    sources: list[str] | None
    include_sources: bool
    email: _Text | None
    reference: _Text | None

    @classmethod
    def parse(cls, raw: dict[str, Any]) -> _Filter:
        path = "query.filter"
        for key in raw:
            if key not in _KNOWN_FILTERS:
                raise SquareBadRequest(
                    "BAD_REQUEST",
                    f"The fake Square does not support the `{key}` customer filter.",
                    f"{path}.{key}",
                )
        source = member(raw, "creation_source", f"{path}.creation_source")
        rule = source.get("rule", "INCLUDE")
        if rule not in ("INCLUDE", "EXCLUDE"):
            raise SquareBadRequest(
                "INVALID_ENUM_VALUE",
                "`rule` must be INCLUDE or EXCLUDE.",
                f"{path}.creation_source.rule",
            )
        return cls(
            time_range(raw, "created_at", f"{path}.created_at"),
            time_range(raw, "updated_at", f"{path}.updated_at"),
            strings(source, "values", f"{path}.creation_source.values"),
            rule == "INCLUDE",
            _Text.parse(
                member(raw, "email_address", f"{path}.email_address"), f"{path}.email_address"
            ),
            _Text.parse(
                member(raw, "reference_id", f"{path}.reference_id"), f"{path}.reference_id"
            ),
        )

    def holds(self, customer: dict[str, Any]) -> bool:
        if self.created_at and not self.created_at.holds(parse_time(customer["created_at"])):
            return False
        if self.updated_at and not self.updated_at.holds(parse_time(customer["updated_at"])):
            return False
        if self.sources is not None and (
            (customer.get("creation_source") in self.sources) != self.include_sources
        ):
            return False
        if self.email and not self.email.holds(customer.get("email_address")):
            return False
        return not (self.reference and not self.reference.holds(customer.get("reference_id")))


def _sort(sort: dict[str, Any]) -> tuple[Any, bool]:
    field = sort.get("field", "DEFAULT")
    order = sort.get("order", "ASC")
    if field not in ("DEFAULT", "CREATED_AT"):
        raise SquareBadRequest(
            "INVALID_ENUM_VALUE",
            "`query.sort.field` must be DEFAULT or CREATED_AT.",
            "query.sort.field",
        )
    if order not in ("ASC", "DESC"):
        raise SquareBadRequest(
            "INVALID_SORT_ORDER", "`query.sort.order` must be ASC or DESC.", "query.sort.order"
        )
    if field == "CREATED_AT":
        return (lambda c: (parse_time(c["created_at"]), c["id"])), order == "DESC"
    return (lambda c: (_default_key(c), c["id"])), order == "DESC"


def _default_key(customer: dict[str, Any]) -> str:
    """Square's DEFAULT sort: given and family name together; without either, the company
    name, the email address or the phone number, the first one set."""
    name = f"{customer.get('given_name') or ''}{customer.get('family_name') or ''}"
    if name:
        return name.casefold()
    for key in ("company_name", "email_address", "phone_number"):
        if customer.get(key):
            return str(customer[key]).casefold()
    return ""


def _tokens(text: str) -> list[str]:
    return [t.casefold() for t in _TOKEN.findall(text)]
