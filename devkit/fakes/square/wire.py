"""The fake Square's wire vocabulary: ids, times, error bodies, request-body fields, cursors.

Bad input raises `SquareBadRequest` with the code Square uses (`VALUE_TOO_HIGH`, `INVALID_TIME`,
`INVALID_CURSOR`...); the endpoint turns it into `{"errors": [{category, code, detail, field}]}`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import string
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from starlette.responses import JSONResponse

MAX_PAGE_SIZE = 100
_ID_ALPHABET = string.ascii_uppercase + string.digits
_ERROR_KIND = {
    400: ("INVALID_REQUEST_ERROR", "BAD_REQUEST"),
    401: ("AUTHENTICATION_ERROR", "UNAUTHORIZED"),
    404: ("INVALID_REQUEST_ERROR", "NOT_FOUND"),
    429: ("RATE_LIMIT_ERROR", "RATE_LIMITED"),
    500: ("API_ERROR", "INTERNAL_SERVER_ERROR"),
    502: ("API_ERROR", "BAD_GATEWAY"),
    503: ("API_ERROR", "SERVICE_UNAVAILABLE"),
    504: ("API_ERROR", "GATEWAY_TIMEOUT"),
}


def square_id(length: int = 14) -> str:
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(length))


def square_time(value: datetime) -> str:
    """Square's RFC 3339 form for object times: UTC, whole seconds, a `Z`."""
    return value.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def parse_time(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError("timestamp without a time zone")
    return parsed


def error(
    status: int, detail: str, field_name: str | None = None, *, code: str | None = None
) -> JSONResponse:
    category, default_code = _ERROR_KIND.get(status, ("API_ERROR", "INTERNAL_SERVER_ERROR"))
    body: dict[str, str] = {"category": category, "code": code or default_code, "detail": detail}
    if field_name is not None:
        body["field"] = field_name
    return JSONResponse({"errors": [body]}, status_code=status)


class SquareBadRequest(Exception):  # noqa: N818 - named for the answer it becomes, a 400
    def __init__(self, code: str, detail: str, field_name: str | None = None) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.field_name = field_name

    def response(self) -> JSONResponse:
        return error(400, self.detail, self.field_name, code=self.code)


def json_object(raw: bytes) -> dict[str, Any]:
    """A request body that must be a JSON object; an empty body is an empty request."""
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError:
        raise SquareBadRequest(
            "EXPECTED_JSON_BODY", "The request body is not valid JSON."
        ) from None
    if not isinstance(body, dict):
        raise SquareBadRequest("EXPECTED_OBJECT", "The request body must be a JSON object.")
    return body


def member(parent: dict[str, Any], key: str, path: str) -> dict[str, Any]:
    """An optional nested object; absent or null reads as empty."""
    value = parent.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SquareBadRequest("EXPECTED_OBJECT", f"Expected `{path}` to be an object.", path)
    return value


def strings(parent: dict[str, Any], key: str, path: str) -> list[str] | None:
    value = parent.get(key)
    if value is None:
        return None
    if not isinstance(value, list):
        raise SquareBadRequest("EXPECTED_ARRAY", f"Expected `{path}` to be an array.", path)
    if not all(isinstance(v, str) for v in value):
        raise SquareBadRequest("INVALID_ARRAY_VALUE", f"`{path}` must hold strings.", path)
    return value


def body_limit(body: dict[str, Any]) -> int:
    """`limit` of a search body: 1 to 100, 100 when absent (Square's VALUE_TOO_LOW/HIGH)."""
    limit = body.get("limit")
    if limit is None:
        return MAX_PAGE_SIZE
    if not isinstance(limit, int) or isinstance(limit, bool):
        raise SquareBadRequest("EXPECTED_INTEGER", "Expected `limit` to be an integer.", "limit")
    if limit < 1:
        raise SquareBadRequest("VALUE_TOO_LOW", "`limit` must be at least 1.", "limit")
    if limit > MAX_PAGE_SIZE:
        raise SquareBadRequest(
            "VALUE_TOO_HIGH", f"`limit` must be at most {MAX_PAGE_SIZE}.", "limit"
        )
    return limit


@dataclass(frozen=True, slots=True)
class TimeBounds:
    """A TimeRange filter with both ends inclusive, as Square documents its ranges where it says
    (SearchOrders' date filter, the customer custom-attribute `updated_at` filter)."""

    start: datetime | None
    end: datetime | None

    def holds(self, moment: datetime) -> bool:
        return (self.start is None or self.start <= moment) and (
            self.end is None or moment <= self.end
        )


def time_range(parent: dict[str, Any], key: str, path: str) -> TimeBounds | None:
    """A TimeRange `{start_at, end_at}` (either may be left out)."""
    if parent.get(key) is None:
        return None
    bounds = member(parent, key, path)
    moments: dict[str, datetime | None] = {}
    for end in ("start_at", "end_at"):
        raw = bounds.get(end)
        if raw is None:
            moments[end] = None
            continue
        try:
            moments[end] = parse_time(raw) if isinstance(raw, str) else None
        except ValueError:
            moments[end] = None
        if moments[end] is None:
            raise SquareBadRequest(
                "INVALID_TIME", f"`{path}.{end}` must be an RFC 3339 timestamp.", f"{path}.{end}"
            )
    start, stop = moments["start_at"], moments["end_at"]
    if start is not None and stop is not None and start > stop:
        raise SquareBadRequest(
            "INVALID_TIME_RANGE", f"`{path}.start_at` is after `{path}.end_at`.", path
        )
    return TimeBounds(start, stop)


def query_fingerprint(query: dict[str, Any]) -> str:
    """What a cursor remembers of the query it was made for."""
    canonical = json.dumps(query, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def encode_cursor(state: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(state, separators=(",", ":")).encode()).decode()


def decode_cursor(cursor: str) -> dict[str, Any]:
    try:
        state = json.loads(base64.urlsafe_b64decode(cursor.encode()))
    except ValueError:
        state = None
    if not isinstance(state, dict):
        raise SquareBadRequest("INVALID_CURSOR", "The cursor is invalid.", "cursor")
    return state


def search_cursor(body: dict[str, Any], query: dict[str, Any]) -> dict[str, Any] | None:
    """The state a search body's cursor carries, or None on a first page. A cursor is valid only
    with the query it was made for, as Square requires."""
    raw = body.get("cursor")
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str):
        raise SquareBadRequest("INVALID_CURSOR", "The cursor is invalid.", "cursor")
    state = decode_cursor(raw)
    offset = state.get("o")
    if not isinstance(offset, int) or offset < 0:
        raise SquareBadRequest("INVALID_CURSOR", "The cursor is invalid.", "cursor")
    if state.get("q") != query_fingerprint(query):
        raise SquareBadRequest(
            "INVALID_CURSOR",
            "The cursor was issued for a different query; send the original query with it.",
            "cursor",
        )
    return state
