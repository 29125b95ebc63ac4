"""The one path every state-changing App API call takes.

In order: the idempotency key is present; the body is JSON; it names no column the source owns
(422 naming them, derived from the projection's ownership); it validates; then the change runs
once, in one transaction with its outbox row (api/idempotency.py).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ValidationError

from api.idempotency import MAX_KEY_LENGTH, request_hash, run_once
from api.ownership_check import source_owned
from api.responses import ApiError, json_response
from ingest.body import BodyTooLargeError, read_limited
from sluice.db import DatabaseUnavailableError
from sluice.jsontext import contains_nul

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from sqlalchemy.ext.asyncio import AsyncConnection
    from starlette.requests import Request
    from starlette.responses import Response

    from schemas.ownership import Ownership

M = TypeVar("M", bound=BaseModel)

IDEMPOTENCY_HEADER = "x-idempotency-key"


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
    try:
        body = json.loads(raw) if raw else {}
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "invalid_json", f"the body is not JSON: {exc}") from exc
    if contains_nul(body):
        # PostgreSQL stores no NUL in text or jsonb: refuse it here rather than fail the write.
        raise ApiError(422, "invalid_body", "strings cannot contain the NUL character (\\u0000)")
    return body


async def _prepare(
    request: Request, model: type[M], ownership: Ownership
) -> tuple[str, dict[str, Any], M]:
    """The idempotency key, the body as sent, and the body validated: or an ApiError."""
    key = request.headers.get(IDEMPOTENCY_HEADER, "")
    if not 1 <= len(key) <= MAX_KEY_LENGTH:
        raise ApiError(
            400,
            "idempotency_key_required",
            f"send X-Idempotency-Key (1 to {MAX_KEY_LENGTH} characters) with every change",
        )
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
    except DatabaseUnavailableError:
        return json_response(
            {"error": "unavailable", "detail": "the database is unavailable; retry"},
            503,
            {"Retry-After": "2"},
        )
    headers = {"Idempotent-Replayed": "true"} if outcome.replayed else {}
    return json_response(outcome.body, outcome.status, headers)
