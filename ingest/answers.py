"""The answers ingest gives: one JSON shape for errors, so callers can read why.

An `Answer` is a complete ASGI response, sent as is by the webhook router (or returned from a
Starlette endpoint), that also says what it meant, for the metrics: `reason` is "accepted",
"duplicate", or the error code a refusal is counted under.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic_core import to_json

if TYPE_CHECKING:
    from collections.abc import Mapping

    from pydantic import ValidationError
    from starlette.types import Receive, Scope, Send

    from ingest.record import Recorded

_JSON = (b"content-type", b"application/json")


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes
    reason: str
    headers: tuple[tuple[bytes, bytes], ...] = ()

    async def __call__(self, _scope: Scope, _receive: Receive, send: Send) -> None:
        length = (b"content-length", str(len(self.body)).encode())
        await send(
            {
                "type": "http.response.start",
                "status": self.status,
                "headers": [_JSON, length, *self.headers],
            }
        )
        await send({"type": "http.response.body", "body": self.body})


def problem(
    status: int, detail: str, reason: str, *, headers: Mapping[str, str] | None = None
) -> Answer:
    return _problem(status, {"error": reason, "detail": detail}, reason, headers)


def validation_problem(detail: str, exc: ValidationError) -> Answer:
    errors = [
        {"field": ".".join(str(part) for part in err["loc"]) or "(body)", "message": err["msg"]}
        for err in exc.errors(include_url=False, include_input=False)
    ]
    content: dict[str, object] = {"error": "malformed", "detail": detail, "errors": errors}
    return _problem(400, content, "malformed", None)


def accepted(recorded: Recorded) -> Answer:
    """200 after the durable commit; a repeat of a stored event says so."""
    body = to_json({"id": str(recorded.id), "duplicate": recorded.duplicate})
    return Answer(200, body, "duplicate" if recorded.duplicate else "accepted")


def _problem(
    status: int, content: dict[str, object], reason: str, headers: Mapping[str, str] | None
) -> Answer:
    extra = tuple((k.lower().encode(), v.encode()) for k, v in (headers or {}).items())
    return Answer(status, to_json(content), reason, extra)
