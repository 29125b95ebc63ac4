"""The query-parameter reader: whatever a client sends, a value in bounds or a ParameterError
naming the parameter, never another exception."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.datastructures import Headers, QueryParams

from sluice.query import BIGINT_MAX, ParameterError, Query, header, instant, whole_number

if TYPE_CHECKING:
    from collections.abc import Callable

# Text of every kind, and text that looks like what the reader is asked for.
values = (
    st.text()
    | st.from_regex(r"-?[0-9\u0660-\u0669 _.e+]{0,30}", fullmatch=True)
    | st.datetimes(timezones=st.timezones()).map(datetime.isoformat)
    | st.dates().map(str)
)


def outcome(read: Callable[[], object]) -> None:
    """Call `read`; it may refuse only with ParameterError."""
    try:
        read()
    except ParameterError as exc:
        assert str(exc).startswith(f"{exc.name}: ")  # noqa: PT017 - the refusal's shape


@settings(max_examples=500)
@given(value=values)
def test_any_value_is_read_or_refused_by_name(value: str) -> None:
    query = Query(QueryParams([("v", value)]))
    outcome(lambda: query.text("v"))
    outcome(lambda: query.boolean("v"))
    outcome(lambda: query.instant("v", dates=True))
    outcome(lambda: query.instant("v", dates=False))
    outcome(lambda: query.integer("v", default=1, minimum=1, maximum=1000))


@settings(max_examples=500)
@given(value=values, low=st.integers(-(2**70), 2**70), span=st.integers(0, 2**70))
def test_whole_numbers_are_in_bounds_or_refused(value: str, low: int, span: int) -> None:
    try:
        number = whole_number("n", value, minimum=low, maximum=low + span)
    except ParameterError as exc:
        assert str(exc) == f"n: must be a whole number from {low} to {low + span}"  # noqa: PT017
        return
    assert low <= number <= low + span
    assert value.isascii()


@settings(max_examples=300)
@given(value=values)
def test_instants_are_in_utc_or_refused(value: str) -> None:
    try:
        read = instant("at", value, dates=True)
    except ParameterError:
        return
    assert read.tzinfo is UTC


@pytest.mark.parametrize(
    ("pairs", "message"),
    [
        ([("v", "a"), ("v", "b")], "v: give it once, not 2 times"),
        ([("v", "a\x00")], "v: cannot contain the NUL character (\\u0000)"),
        ([("v", "")], "v: must be 1 to 200 characters"),
        ([("v", "x" * 201)], "v: must be 1 to 200 characters"),
    ],
)
def test_what_a_text_cannot_be(pairs: list[tuple[str, str]], message: str) -> None:
    with pytest.raises(ParameterError, match=f"^{re.escape(message)}$"):
        Query(QueryParams(pairs)).text("v")


def test_what_the_reader_returns() -> None:
    query = Query(QueryParams("n=42&b=YES&t=2030-01-01T02:00:00%2B02:00&d=2030-01-01&e="))
    assert query.integer("n", default=1, minimum=0, maximum=100) == 42
    assert query.integer("absent", default=7, minimum=0, maximum=100) == 7
    assert query.boolean("b") is True
    assert query.boolean("absent") is False
    assert query.instant("t", dates=False) == datetime(2030, 1, 1, tzinfo=UTC)
    assert query.instant("d", dates=True) == datetime(2030, 1, 1, tzinfo=UTC)
    assert query.instant("e", dates=True) is None
    assert query.given("e")
    assert not query.given("absent")
    assert whole_number("id", str(BIGINT_MAX), minimum=0, maximum=BIGINT_MAX) == BIGINT_MAX


def test_a_header_is_read_once() -> None:
    assert header(Headers({"Last-Event-ID": "5"}), "Last-Event-ID") == "5"
    assert header(Headers({}), "Last-Event-ID") is None
    repeated = Headers(raw=[(b"last-event-id", b"1"), (b"last-event-id", b"2")])
    with pytest.raises(ParameterError) as refused:
        header(repeated, "Last-Event-ID")
    assert refused.value.place == "header"
    assert str(refused.value) == "Last-Event-ID: give it once, not 2 times"
