"""The JSON answers ingest gives: one shape for errors, so callers can read why."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.responses import JSONResponse

if TYPE_CHECKING:
    from collections.abc import Mapping

    from pydantic import ValidationError

    from ingest.record import Recorded


class ProblemResponse(JSONResponse):
    """An error answer; `reason` is also what the rejected-webhooks metric is labelled with."""

    def __init__(
        self,
        status: int,
        content: dict[str, object],
        reason: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(content, status_code=status, headers=headers)
        self.reason = reason


class AcceptedResponse(JSONResponse):
    """A 2xx after the durable commit; `duplicate` tells the metrics a repeat from a new event."""

    def __init__(self, recorded: Recorded) -> None:
        super().__init__({"id": str(recorded.id), "duplicate": recorded.duplicate})
        self.duplicate = recorded.duplicate


def problem(
    status: int, detail: str, reason: str, *, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return ProblemResponse(status, {"error": reason, "detail": detail}, reason, headers)


def validation_problem(detail: str, exc: ValidationError) -> JSONResponse:
    errors = [
        {"field": ".".join(str(part) for part in err["loc"]) or "(body)", "message": err["msg"]}
        for err in exc.errors(include_url=False, include_input=False)
    ]
    content: dict[str, object] = {"error": "malformed", "detail": detail, "errors": errors}
    return ProblemResponse(400, content, "malformed")


def accepted(recorded: Recorded) -> JSONResponse:
    return AcceptedResponse(recorded)
