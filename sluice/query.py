"""Reading query parameters (and single-valued headers) sent by people: one reader for the App
API and the admin service, so every endpoint refuses the same things with the same words.

Each value is given at most once, holds no NUL (PostgreSQL stores none in text, so a NUL could
only fail a query), and is bounded before it is parsed: integers are ASCII digits short enough
for int() to be cheap, texts and times have a maximum length. Whatever is wrong raises
ParameterError naming the parameter; each service answers it in its own problem shape.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from collections.abc import Sequence

    from starlette.datastructures import Headers, QueryParams

MAX_TEXT_LENGTH = 200
MAX_INSTANT_LENGTH = 64  # an ISO 8601 date-time with microseconds and a zone is at most 42
BIGINT_MAX = 2**63 - 1  # PostgreSQL's bigint: ids and counts are no larger

Place = Literal["query", "header"]

# ASCII digits only: int() would also take other scripts' digits, spaces and underscores.
_WHOLE_NUMBER = re.compile(r"-?[0-9]{1,19}")
_BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


class ParameterError(ValueError):
    """A query parameter or header that cannot be used; the message names it."""

    def __init__(self, name: str, problem: str, place: Place = "query") -> None:
        super().__init__(f"{name}: {problem}")
        self.name = name
        self.place = place


def single(name: str, values: Sequence[str], place: Place = "query") -> str | None:
    """The one value of a parameter (None when absent): given twice it is ambiguous."""
    if not values:
        return None
    if len(values) > 1:
        raise ParameterError(name, f"give it once, not {len(values)} times", place)
    value = values[0]
    if "\x00" in value:
        raise ParameterError(name, "cannot contain the NUL character (\\u0000)", place)
    return value


def header(headers: Headers, name: str) -> str | None:
    return single(name, headers.getlist(name), "header")


def whole_number(
    name: str, value: str, *, minimum: int, maximum: int, place: Place = "query"
) -> int:
    if _WHOLE_NUMBER.fullmatch(value) is None or not minimum <= int(value) <= maximum:
        raise ParameterError(name, f"must be a whole number from {minimum} to {maximum}", place)
    return int(value)


def instant(name: str, value: str, *, dates: bool, end: bool = False) -> datetime:
    """An ISO 8601 date-time with a zone, in UTC; with `dates`, a date too: the whole UTC day,
    so its midnight, or with `end` (the last day of a range) the next day's. The CLI and the
    HTTP endpoints read their times here, so one form means one instant everywhere."""
    if len(value) > MAX_INSTANT_LENGTH:
        raise ParameterError(name, f"must be at most {MAX_INSTANT_LENGTH} characters")
    try:
        if dates and len(value) == 10:
            day = datetime.combine(date.fromisoformat(value), datetime.min.time(), UTC)
            return day + timedelta(days=1) if end and day.date() < date.max else day
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        what = "date or date-time" if dates else "date-time"
        raise ParameterError(name, f"not an ISO 8601 {what}") from exc
    if parsed.tzinfo is None:
        raise ParameterError(name, "a date-time needs a time zone")
    try:
        # In UTC here, so that no comparison or conversion later can overflow.
        return parsed.astimezone(UTC)
    except OverflowError as exc:
        raise ParameterError(name, "outside the years 1 to 9999 in UTC") from exc


@dataclass(frozen=True, slots=True)
class Query:
    """The query string of one request, read one parameter at a time."""

    params: QueryParams

    def given(self, name: str) -> bool:
        return name in self.params

    def value(self, name: str) -> str | None:
        return single(name, self.params.getlist(name))

    def text(self, name: str, *, max_length: int = MAX_TEXT_LENGTH) -> str | None:
        value = self.value(name)
        if value is not None and not 1 <= len(value) <= max_length:
            raise ParameterError(name, f"must be 1 to {max_length} characters")
        return value

    def integer(self, name: str, *, default: int, minimum: int, maximum: int) -> int:
        value = self.value(name)
        if value is None:
            return default
        return whole_number(name, value, minimum=minimum, maximum=maximum)

    def boolean(self, name: str, *, default: bool = False) -> bool:
        value = self.value(name)
        if value is None:
            return default
        parsed = _BOOLEANS.get(value.lower())
        if parsed is None:
            raise ParameterError(name, "must be true or false")
        return parsed

    def instant(self, name: str, *, dates: bool, end: bool = False) -> datetime | None:
        """An empty value is no value: `?from=&to=` is the whole range."""
        value = self.value(name)
        return instant(name, value, dates=dates, end=end) if value else None
