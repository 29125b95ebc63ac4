"""Keyset pages for the App API's lists: an opaque cursor holds the sort key of the last row
sent, and the next page starts after it. A row inserted or changed meanwhile moves no row
already paged past, so no row is sent twice and none between two pages is skipped (a row whose
sort key changes between pages is seen where it now sorts, or not at all)."""

from __future__ import annotations

import base64
import json
from typing import TYPE_CHECKING, Any

from api.responses import etag_response
from sluice.query import ParameterError

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

MAX_CURSOR_LENGTH = 600


def encode_cursor(key: list[Any]) -> str:
    raw = json.dumps(key, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(value: str | None, size: int) -> list[str] | None:
    """The sort key a cursor holds (`size` strings), or None without one; a 400 for any other."""
    if not value:
        return None
    if len(value) > MAX_CURSOR_LENGTH:
        raise ParameterError("cursor", "not a cursor this API gave")
    try:
        key = json.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ParameterError("cursor", "not a cursor this API gave") from exc
    if not (isinstance(key, list) and len(key) == size and all(isinstance(k, str) for k in key)):
        raise ParameterError("cursor", "not a cursor this API gave")
    if any("\x00" in k for k in key):
        raise ParameterError("cursor", "not a cursor this API gave")
    return key


def next_link(request: Request, cursor: str | None) -> str | None:
    """The next page's path and query: this request's own, with the cursor replaced."""
    if cursor is None:
        return None
    url = request.url.include_query_params(cursor=cursor)
    return f"{url.path}?{url.query}"


def paged_response(
    request: Request,
    body: dict[str, Any],
    cursor: str | None,
) -> Response:
    """A page of a list: its rows, `next` (the next page's link, or null on the last) and the
    same link as `Link: <...>; rel="next"`, with the ETag of the whole page."""
    link = next_link(request, cursor)
    response = etag_response(request, {**body, "next": link})
    if link is not None:
        response.headers["Link"] = f'<{link}>; rel="next"'
    return response
