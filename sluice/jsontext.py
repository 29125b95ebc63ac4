"""JSON text for statement parameters and message values, encoded by pydantic-core (Rust):
several times faster than the standard library on the ingest hot path. Every JSON parameter and
message value sluice builds from plain values goes through `json_text` (models encode themselves
with the same pydantic-core: `model_dump_json`, and the CloudEvents head in schemas/envelope.py,
on the floor below): times as ISO 8601 (UTC as `Z`), which the statements read back with
`CAST(... AS timestamptz)` and `jsonb_to_recordset`; text as UTF-8, a NUL escaped as `\u0000`
for the database to refuse. The one check for what PostgreSQL cannot store from JSON: the NUL
character, in no text or jsonb value. And a bounded reader for JSON from people (the App API's
bodies), which refuses what would exhaust the stack or the CPU before any parser sees it.

Nothing here recurses: a document a million levels deep costs a scan, never a RecursionError.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any, Literal

from pydantic_core import from_json, to_json

if TYPE_CHECKING:
    from collections.abc import Iterator

# Deeper than any body the API takes (a photo in a list in a body is 3 levels), far below the
# interpreter's recursion limit, which json.loads, pydantic and json.dumps all spend.
MAX_DEPTH = 32
# Long enough for any integer or float a client means; short of where int() of a literal costs
# quadratic time (Python refuses 4,300 digits for that reason).
MAX_NUMBER_LENGTH = 100

JsonRefusal = Literal["not_json", "too_deep", "number_too_long", "nul"]


class JsonRefusedError(ValueError):
    """A document `load_bounded` refused; `reason` is which rule, for the caller to answer."""

    def __init__(self, reason: JsonRefusal, detail: str) -> None:
        super().__init__(detail)
        self.reason: JsonRefusal = reason
        self.detail = detail


def json_text(value: Any) -> str:  # noqa: ANN401 - any JSON-encodable value
    return to_json(value).decode()


def _strings(value: Any) -> Iterator[str]:  # noqa: ANN401 - any parsed JSON
    """Every string of a parsed document, keys included, walked with a stack of our own."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict):
            yield from item
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)


def contains_nul(value: Any) -> bool:  # noqa: ANN401 - any parsed JSON
    return any("\x00" in text for text in _strings(value))


def raw_json_contains_nul(raw: bytes) -> bool:
    """Whether a JSON document's strings hold a NUL. Parses only when the escape appears at all,
    with pydantic-core, whose depth is bounded (a document it cannot parse holds no strings)."""
    if b"\\u0000" not in raw:
        return False
    try:
        return contains_nul(from_json(raw))
    except ValueError:
        return False


# A JSON string: a quote, then anything but quotes and backslashes, or a backslash and any one
# byte, up to the closing quote or the end of the text (an unterminated string ends the document
# for a parser too). Possessive, so that no input makes the match backtrack: the scan is linear.
# In UTF-8 no byte of a multi-byte character is a quote, a backslash or a bracket.
_STRING = re.compile(rb'"[^"\\]*+(?:\\.[^"\\]*+)*+(?:"|\\?\Z)', re.DOTALL)
_OPENING_CLOSING = bytes.maketrans(b"{}", b"[]")
_NOT_BRACKETS = bytes(set(range(256)) - set(b"[]{}"))


def nesting_exceeds(utf8: bytes, limit: int) -> bool:
    """Whether JSON text nests arrays and objects deeper than `limit`, found without parsing:
    strings are dropped, then everything but brackets, then innermost pairs, once per level.
    A pair still there after `limit` rounds is deeper than that. Brackets that do not pair up
    (no JSON, but a parser would descend into them before it noticed) count as levels too."""
    brackets = _STRING.sub(b"", utf8).translate(_OPENING_CLOSING, _NOT_BRACKETS)
    if brackets.count(b"[") <= limit:
        return False
    if b"[" * (limit + 1) in brackets:
        return True  # the usual attack, found in one search
    rounds = 0
    while rounds < limit:
        inner_removed = brackets.replace(b"[]", b"")
        if inner_removed == brackets:
            break  # no pairs left: what remains is unpaired
        brackets = inner_removed
        rounds += 1
    return rounds + brackets.count(b"[") > limit


def _number(literal: str) -> str:
    if len(literal) > MAX_NUMBER_LENGTH:
        raise JsonRefusedError(
            "number_too_long", f"numbers are limited to {MAX_NUMBER_LENGTH} characters"
        )
    return literal


def _no_constant(_: str) -> Any:  # noqa: ANN401 - json's parse_constant hook
    raise JsonRefusedError("not_json", "NaN and Infinity are not JSON")


def load_bounded(raw: bytes, *, max_depth: int = MAX_DEPTH) -> Any:  # noqa: ANN401 - parsed JSON
    """Parse a JSON document from a client, refusing (JsonRefusedError), in this order: bytes
    that are not JSON text; nesting deeper than `max_depth`, before parsing; numbers longer
    than MAX_NUMBER_LENGTH; NaN and Infinity; and strings holding a NUL."""
    encoding = json.detect_encoding(raw)  # as json.loads does: UTF-8, or UTF-16/32 by their BOM
    try:
        text = raw.decode(encoding, "surrogatepass")
    except UnicodeDecodeError as exc:
        raise JsonRefusedError("not_json", f"not {encoding} text: {exc}") from exc
    utf8 = raw if encoding == "utf-8" else text.encode("utf-8", "surrogatepass")
    if nesting_exceeds(utf8, max_depth):
        raise JsonRefusedError("too_deep", f"nested deeper than {max_depth} levels")
    try:
        document = json.loads(
            text,
            parse_int=lambda literal: int(_number(literal)),
            parse_float=lambda literal: float(_number(literal)),
            parse_constant=_no_constant,
        )
    except JsonRefusedError:
        raise
    except ValueError as exc:
        raise JsonRefusedError("not_json", str(exc)) from exc
    if contains_nul(document):
        raise JsonRefusedError("nul", "strings cannot contain the NUL character (\\u0000)")
    return document
