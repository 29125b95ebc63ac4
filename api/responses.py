"""JSON responses, problems, and ETags for polling clients."""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

from pydantic_core import to_jsonable_python
from starlette.responses import Response

from sluice.query import ParameterError, header

if TYPE_CHECKING:
    from collections.abc import Mapping

    from starlette.requests import Request


class ApiError(Exception):
    """An answer other than success, with the JSON body to send."""

    def __init__(self, status: int, error: str, detail: str, **extra: Any) -> None:  # noqa: ANN401 - JSON values
        super().__init__(detail)
        self.status = status
        self.body: dict[str, Any] = {"error": error, "detail": detail, **extra}

    def response(self) -> Response:
        return json_response(self.body, self.status)


def jsonable(body: Any) -> Any:  # noqa: ANN401 - any JSON document
    return to_jsonable_python(body)


def render(body: Any) -> bytes:  # noqa: ANN401 - any JSON document
    return json.dumps(jsonable(body), separators=(",", ":"), ensure_ascii=False).encode()


def json_response(
    body: Any,  # noqa: ANN401 - any JSON document
    status: int = 200,
    headers: Mapping[str, str] | None = None,
) -> Response:
    return Response(
        render(body), status, headers=dict(headers or {}), media_type="application/json"
    )


def problem(status: int, error: str, detail: str, **extra: Any) -> Response:  # noqa: ANN401
    return ApiError(status, error, detail, **extra).response()


def _matches(if_none_match: str, tag: str) -> bool:
    if if_none_match.strip() == "*":
        return True
    # Weak comparison (RFC 9110 13.1.2): W/ prefixes do not matter for GET.
    candidates = (t.strip().removeprefix("W/") for t in if_none_match.split(","))
    return tag in candidates


# What an answer adds to a row (a lead's write-back state, conflicts, skipped cells): not the row.
_NOT_THE_ROW = frozenset({"sync", "conflicts", "skipped_cells"})


def row_etag(row: Mapping[str, Any]) -> str:
    """The strong ETag of one row: a digest of its columns' values, whatever the key order, so
    a read, a write's answer and that answer replayed from its idempotency key all agree, and
    any change to the row (by staff or by the source) makes a new one."""
    columns = {k: v for k, v in row.items() if k not in _NOT_THE_ROW}
    canonical = json.dumps(jsonable(columns), sort_keys=True, separators=(",", ":"))
    return f'"{hashlib.sha256(canonical.encode()).hexdigest()[:32]}"'


def etag_response(
    request: Request,
    body: Any,  # noqa: ANN401 - any JSON document
    tag: str | None = None,
) -> Response:
    """200 with a strong ETag (the given one, or one of the body), or 304 when the client
    already has it."""
    content = render(body)
    tag = tag or f'"{hashlib.sha256(content).hexdigest()[:32]}"'
    headers = {"ETag": tag, "Cache-Control": "no-cache"}
    if _matches(request.headers.get("if-none-match", ""), tag):
        return Response(status_code=304, headers=headers)
    return Response(content, 200, headers=headers, media_type="application/json")


async def api_error_response(_: Request, exc: Exception) -> Response:
    """Starlette exception handler: an ApiError raised anywhere becomes its answer."""
    if not isinstance(exc, ApiError):
        raise exc
    return exc.response()


async def parameter_error_response(_: Request, exc: Exception) -> Response:
    """Starlette exception handler: a query parameter or header the reader refused is a 400."""
    if not isinstance(exc, ParameterError):
        raise exc
    error = "bad_header" if exc.place == "header" else "bad_query"
    return problem(400, error, str(exc), parameter=exc.name)


def single_header(request: Request, name: str) -> str | None:
    return header(request.headers, name)


def path_id(request: Request, what: str) -> str:
    """The `{id}` of the path. A NUL character can be in no stored id (PostgreSQL refuses it in
    text), so such an id is simply not found, rather than an error from the database."""
    value: str = request.path_params["id"]
    if "\x00" in value:
        raise ApiError(404, "not_found", f"no such {what}")
    return value
