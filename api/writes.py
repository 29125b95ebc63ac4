"""The one path every state-changing App API call takes.

In order: the idempotency key is present; the body is JSON within the reader's bounds
(sluice/jsontext.py: depth, number length, no NUL); it names no column the source owns (422
naming them, derived from the projection's ownership); it validates; then the change runs once,
in one transaction with its outbox row (api/idempotency.py).

A change to one row takes `If-Match` with the row's ETag (api/responses.row_etag): the change
checks it against the row it has locked, and a row that changed since answers 412 with the
current row and changes nothing. With SLUICE_API_REQUIRE_IF_MATCH a change without it is
refused (428). The answer of a single-row change carries the row's new ETag; If-Match is part
of what the idempotency key remembers, so a replay answers byte for byte the same.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ValidationError

from api.idempotency import MAX_KEY_LENGTH, request_hash, run_once
from api.ownership_check import source_owned
from api.responses import ApiError, json_response, path_id, row_etag, single_header
from sluice.body import BodyTooLargeError, read_limited
from sluice.jsontext import (
    MAX_DEPTH,
    MAX_NUMBER_LENGTH,
    JsonRefusal,
    JsonRefusedError,
    load_bounded,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from sqlalchemy.ext.asyncio import AsyncConnection
    from starlette.requests import Request
    from starlette.responses import Response

    from schemas.ownership import Ownership
    from sluice.tracing import Tracing

M = TypeVar("M", bound=BaseModel)

IDEMPOTENCY_HEADER = "X-Idempotency-Key"
IF_MATCH_HEADER = "If-Match"

# How each refusal of the JSON reader is answered: status, error code, detail.
_REFUSED: dict[JsonRefusal, tuple[int, str, str]] = {
    "not_json": (400, "invalid_json", "the body is not JSON: {detail}"),
    "too_deep": (
        422,
        "too_deep",
        f"the body nests arrays and objects deeper than {MAX_DEPTH} levels",
    ),
    "number_too_long": (
        422,
        "number_too_long",
        f"numbers in the body are limited to {MAX_NUMBER_LENGTH} characters",
    ),
    # PostgreSQL stores no NUL in text or jsonb: refused here rather than failing the write.
    "nul": (422, "invalid_body", "strings cannot contain the NUL character (\\u0000)"),
}


def validation_problem(exc: ValidationError) -> ApiError:
    errors = [
        {"field": ".".join(str(p) for p in e["loc"]) or "body", "message": e["msg"]}
        for e in exc.errors(include_url=False, include_input=False)
    ]
    return ApiError(422, "invalid_body", "the body is not valid", errors=errors)


async def read_body(request: Request, max_bytes: int) -> Any:  # noqa: ANN401 - parsed JSON
    try:
        raw = await read_limited(request.receive, request.headers.get("content-length"), max_bytes)
    except BodyTooLargeError as exc:
        raise ApiError(413, "too_large", f"bodies are limited to {max_bytes} bytes") from exc
    if not raw:
        return {}
    try:
        return load_bounded(raw)
    except JsonRefusedError as exc:
        status, error, detail = _REFUSED[exc.reason]
        raise ApiError(status, error, detail.format(detail=exc.detail)) from exc


def idempotency_key(request: Request) -> str:
    key = single_header(request, IDEMPOTENCY_HEADER)
    if not key:
        raise ApiError(
            400,
            "idempotency_key_required",
            f"send {IDEMPOTENCY_HEADER} (1 to {MAX_KEY_LENGTH} characters) with every change",
        )
    if len(key) > MAX_KEY_LENGTH:
        raise ApiError(
            400,
            "idempotency_key_too_long",
            f"{IDEMPOTENCY_HEADER} is longer than {MAX_KEY_LENGTH} characters",
        )
    return key


async def _prepare(
    request: Request, model: type[M], ownership: Ownership
) -> tuple[str, dict[str, Any], M]:
    """The idempotency key, the body as sent, and the body validated: or an ApiError."""
    key = idempotency_key(request)
    body = await read_body(request, request.app.state.settings.max_body_bytes)
    if not isinstance(body, dict):
        raise ApiError(422, "invalid_body", "the body must be a JSON object")
    refused = source_owned(ownership, body)
    if refused:
        raise ApiError(
            422,
            "source_owned",
            f"{', '.join(refused)}: owned by the source system, not writable here",
            columns=refused,
        )
    try:
        parsed = model.model_validate(body)
    except ValidationError as exc:
        raise validation_problem(exc) from exc
    return key, body, parsed


def _traced(request: Request) -> contextlib.AbstractContextManager[object]:
    """The change in a server span while tracing is on: its outbox rows and the lead's push to
    Airtable are then in the caller's trace (sluice/tracing.py)."""
    tracing: Tracing | None = getattr(request.app.state, "tracing", None)
    if tracing is None:
        return contextlib.nullcontext()
    route = getattr(request.scope.get("route"), "path", request.url.path)
    name = f"{request.method} {route}"
    return tracing.server_span(name, request.headers, {"http.request.method": request.method})


def precondition(request: Request) -> str | None:
    """The `If-Match` of a single-row change, or None; 428 where the setting requires one."""
    tag = single_header(request, IF_MATCH_HEADER)
    if tag is None and request.app.state.settings.api_require_if_match:
        raise ApiError(
            428,
            "if_match_required",
            f"send {IF_MATCH_HEADER} with the row's ETag (from a GET) with every change",
        )
    return tag


def check_precondition(if_match: str | None, current: dict[str, Any]) -> None:
    """412 with the current row when `If-Match` names another version of it (`*` matches any)."""
    if if_match is None:
        return
    tag = row_etag(current)
    offered = [t.strip() for t in if_match.split(",")]
    # Strong comparison (RFC 9110 13.1.1): a weak tag never matches.
    if "*" in offered or tag in offered:
        return
    raise ApiError(
        412,
        "precondition_failed",
        "the row changed since that ETag: read it again (the current row is in `current`)",
        etag=tag,
        current=current,
    )


async def state_change(
    request: Request,
    model: type[M],
    ownership: Ownership,
    change: Callable[[AsyncConnection, M, str, str | None], Awaitable[tuple[int, Any]]],
    *,
    one_row: bool = True,
) -> Response:
    """Run `change(conn, body, key, if_match)` once per idempotency key; the change checks
    `if_match` against the row it locks (check_precondition). `one_row`: the answer is one row,
    which gets an ETag header (a 412, the current row's); otherwise If-Match does not apply."""
    try:
        if_match = precondition(request) if one_row else None
        key, body, parsed = await _prepare(request, model, ownership)
        path = request.url.path if if_match is None else f"{request.url.path}\n{if_match}"
        with _traced(request):
            outcome = await run_once(
                request.app.state.engine,
                key,
                request_hash(request.method, path, body),
                request.app.state.settings.idempotency_ttl_seconds,
                lambda conn: change(conn, parsed, key, if_match),
            )
    except ApiError as exc:
        return exc.response()
    headers = {"Idempotent-Replayed": "true"} if outcome.replayed else {}
    if one_row and isinstance(outcome.body, dict):
        if outcome.status == 200:
            headers["ETag"] = row_etag(outcome.body)
        elif outcome.status == 412 and isinstance(outcome.body.get("etag"), str):
            headers["ETag"] = outcome.body["etag"]
    return json_response(outcome.body, outcome.status, headers)


def row_endpoint(
    what: str,
    model: type[M],
    ownership: Ownership,
    change: Callable[[AsyncConnection, M, str, str, str | None], Awaitable[tuple[int, Any]]],
) -> Callable[[Request], Awaitable[Response]]:
    """The endpoint of a change to the one row the path's `{id}` names (`what`: job, lead):
    `change(conn, body, key, id, if_match)` through `state_change`."""

    async def endpoint(request: Request) -> Response:
        row_id = path_id(request, what)
        return await state_change(
            request,
            model,
            ownership,
            lambda conn, body, key, if_match: change(conn, body, key, row_id, if_match),
        )

    return endpoint
