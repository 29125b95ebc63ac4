"""The JSON helpers never recurse: the NUL check walks any depth, and the bounded reader finds
nesting deeper than its limit by a scan, before any parser sees the document."""

from __future__ import annotations

import contextlib
import json
import string
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.jsontext import (
    MAX_DEPTH,
    JsonRefusedError,
    contains_nul,
    json_text,
    load_bounded,
    nesting_exceeds,
    raw_json_contains_nul,
)

if TYPE_CHECKING:
    import psycopg


def depth(document: Any) -> int:
    """Levels of arrays and objects, counted with a stack (a scalar is 0, `[]` is 1)."""
    deepest = 0
    pending = [(document, 0)]
    while pending:
        item, level = pending.pop()
        if isinstance(item, dict | list):
            level += 1
            deepest = max(deepest, level)
            children = item.values() if isinstance(item, dict) else item
            pending.extend((child, level) for child in children)
    return deepest


def nested_list(levels: int, leaf: Any) -> Any:
    document = leaf
    for _ in range(levels):
        document = [document]
    return document


documents = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=60,
)


@settings(max_examples=300)
@given(document=documents, limit=st.integers(min_value=0, max_value=8))
def test_the_scan_measures_the_depth_of_any_document(document: Any, limit: int) -> None:
    for text in (json.dumps(document), json.dumps(document, indent=1, ensure_ascii=False)):
        assert nesting_exceeds(text.encode(), limit) == (depth(document) > limit)


# Text made of what the scan looks at: brackets, quotes, escapes, and a little filler.
bracket_soup = st.text(alphabet='[]{}"\\,:1 ', max_size=400)


def levels_entered(text: str) -> int:
    """How deep a parser that reads `text` left to right has descended: a plain reference
    tokenizer, exact for the valid prefix a parser reads before it stops."""
    deepest = level = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            escaped, in_string = (False, True) if escaped else (char == "\\", char != '"')
        elif char == '"':
            in_string = True
        elif char in "[{":
            level += 1
            deepest = max(deepest, level)
        elif char in "]}":
            level -= 1
    return deepest


def _cut(document_and_place: tuple[Any, int]) -> str:
    text = json.dumps(document_and_place[0])
    return text[: document_and_place[1] % (len(text) + 1)]


# JSON cut off anywhere: a parser descends into its open brackets, then stops.
truncated = st.tuples(documents, st.integers(min_value=0)).map(_cut)


@settings(max_examples=1000)
@given(text=bracket_soup | truncated)
def test_no_parser_descends_deeper_than_the_scan_allows(text: str) -> None:
    limit = 4
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        # Not JSON: the parser stopped at exc.pos, having entered the levels before it.
        if levels_entered(text[: exc.pos + 1]) > limit:
            assert nesting_exceeds(text.encode(), limit)
        return
    assert nesting_exceeds(text.encode(), limit) == (depth(document) > limit)


@settings(max_examples=300)
@given(raw=st.binary(max_size=300) | bracket_soup.map(str.encode))
def test_the_reader_refuses_anything_with_its_own_error(raw: bytes) -> None:
    with contextlib.suppress(JsonRefusedError):  # anything else fails the test
        load_bounded(raw, max_depth=4)


@pytest.mark.parametrize(
    "text",
    [
        b'"[[[[[[[[["',
        b'["\\"[[[[[[[[["]',
        b'{"\\\\":"[[[[[[[[[[["}',
        '["é[[[[[[[[[[[[["]'.encode(),
        b'"\\' * 1000,
        b'"' + b"[" * 1000,  # an unterminated string: a parser never enters its brackets
    ],
)
def test_brackets_inside_strings_are_not_levels(text: bytes) -> None:
    assert not nesting_exceeds(text, 2)


@pytest.mark.parametrize(
    "text",
    [
        b"[" * 3,  # never closed: a parser descends before it notices
        b"[[],[[],[",  # the same, with pairs in between
        b"[[[]]]",
        b'{"a":{"b":[1]}}',
        b"]]][[[",
        b'["x"][[[1]]]',
    ],
)
def test_unpaired_and_deep_brackets_are_levels(text: bytes) -> None:
    assert nesting_exceeds(text, 2)


def test_a_million_levels_are_refused_without_recursing() -> None:
    raw = b"[" * 1_000_000 + b"]" * 1_000_000
    with pytest.raises(JsonRefusedError) as refused:
        load_bounded(raw)
    assert refused.value.reason == "too_deep"
    interleaved = (b"[" * MAX_DEPTH + b"]" * MAX_DEPTH) * 1000 + b"[" * (MAX_DEPTH + 1)
    assert nesting_exceeds(interleaved, MAX_DEPTH)


def test_the_reader_takes_the_deepest_document_it_allows() -> None:
    document = {"a": nested_list(MAX_DEPTH - 1, "x")}
    assert load_bounded(json.dumps(document).encode()) == document
    with pytest.raises(JsonRefusedError) as refused:
        load_bounded(json.dumps({"a": nested_list(MAX_DEPTH, "x")}).encode())
    assert refused.value.reason == "too_deep"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"1" * 101, "number_too_long"),
        (b"[-" + b"1" * 100 + b"]", "number_too_long"),
        (b"1e" + b"0" * 99, "number_too_long"),
        (b"NaN", "not_json"),
        (b"[Infinity]", "not_json"),
        (b"\xff\xfe\xfa", "not_json"),
        (b"{", "not_json"),
        (b'{"\\u0000":1}', "nul"),
        (b'["a\\u0000b"]', "nul"),
    ],
)
def test_what_the_reader_refuses(raw: bytes, reason: str) -> None:
    with pytest.raises(JsonRefusedError) as refused:
        load_bounded(raw)
    assert refused.value.reason == reason


def test_what_the_reader_takes() -> None:
    assert load_bounded(b"1" * 100) == int("1" * 100)
    assert load_bounded(b"1e400") == float("inf")  # in range of the parser; fields refuse it
    assert load_bounded(b'"\\\\u0000"') == "\\u0000"  # an escaped backslash, not a NUL
    assert load_bounded('{"a": "é"}'.encode("utf-16")) == {"a": "é"}  # as json.loads does


def test_the_nul_check_walks_any_depth() -> None:
    deep = nested_list(1_000_000, "x")
    assert not contains_nul(deep)
    assert contains_nul(nested_list(1_000_000, "a\x00"))
    assert contains_nul({"a": [{"b\x00": 1}]})
    assert not contains_nul({"a": [1, 2.5, None, True, {"b": "c"}]})


def test_the_ingest_nul_check_survives_any_depth() -> None:
    deep = b"[" * 100_000 + b'"\\u0000"' + b"]" * 100_000
    assert raw_json_contains_nul(deep) is False  # no parser takes it; ingest refuses it before
    assert raw_json_contains_nul(b'{"a":["\\u0000"]}')
    assert not raw_json_contains_nul(b'{"a":["\\\\u0000"]}')
    assert not raw_json_contains_nul(b'{"a":"' + string.ascii_letters.encode() + b'"}')


def test_statement_parameters_carry_times_postgresql_reads_back(
    db: psycopg.Connection[tuple[object, ...]],
) -> None:
    """json_text is the one encoder of JSON statement parameters: a time goes as ISO 8601, which
    `jsonb_to_recordset(...) AS v(at timestamptz)` reads as the same instant, and a time kept as
    a jsonb value stays a string; non-ASCII text goes as it is."""
    at = datetime(2025, 3, 4, 5, 6, 7, 890123, tzinfo=UTC)
    rows = json_text([{"at": at, "value": at, "text": "Zoë ✓"}])
    assert "Zoë ✓" in rows
    assert json.loads(rows) == [
        {
            "at": "2025-03-04T05:06:07.890123Z",
            "value": "2025-03-04T05:06:07.890123Z",
            "text": "Zoë ✓",
        }
    ]
    read = db.execute(
        "SELECT v.at, v.value, v.text FROM jsonb_to_recordset(CAST(%s AS jsonb))"
        " AS v(at timestamptz, value jsonb, text text)",
        (rows,),
    ).fetchone()
    assert read == (at, "2025-03-04T05:06:07.890123Z", "Zoë ✓")
