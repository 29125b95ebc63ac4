"""The one path every state-changing App API call takes.

In order: the idempotency key is present; the body is JSON within the reader's bounds
(sluice/jsontext.py: depth, number length, no NUL); it names no column the source owns (422
naming them, derived from the projection's ownership); it validates; then the change runs once,
in one transaction with its outbox row (api/idempotency.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ValidationError

from api.idempotency import MAX_KEY_LENGTH, request_hash, run_once
from api.ownership_check import source_owned
from api.responses import ApiError, json_response, single_header
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

M = TypeVar("M", bound=BaseModel)

IDEMPOTENCY_HEADER = "X-Idempotency-Key"

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


async def state_change(
    request: Request,
    model: type[M],
    ownership: Ownership,
    change: Callable[[AsyncConnection, M, str], Awaitable[tuple[int, Any]]],
) -> Response:
    try:
        key, body, parsed = await _prepare(request, model, ownership)
        outcome = await run_once(
            request.app.state.engine,
            key,
            request_hash(request.method, request.url.path, body),
            request.app.state.settings.idempotency_ttl_seconds,
            lambda conn: change(conn, parsed, key),
        )
    except ApiError as exc:
        return exc.response()
    headers = {"Idempotent-Replayed": "true"} if outcome.replayed else {}
    return json_response(outcome.body, outcome.status, headers)
