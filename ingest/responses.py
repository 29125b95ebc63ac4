"""The JSON answers ingest gives: one shape for errors, so callers can read why."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.responses import JSONResponse

if TYPE_CHECKING:
    from collections.abc import Mapping

    from pydantic import ValidationError

    from ingest.record import Recorded


def problem(
    status: int, detail: str, reason: str, *, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": reason, "detail": detail}, status_code=status, headers=headers)


def validation_problem(detail: str, exc: ValidationError) -> JSONResponse:
    errors = [
        {"field": ".".join(str(part) for part in err["loc"]) or "(body)", "message": err["msg"]}
        for err in exc.errors(include_url=False, include_input=False)
    ]
    return JSONResponse({"error": "malformed", "detail": detail, "errors": errors}, status_code=400)


def accepted(recorded: Recorded) -> JSONResponse:
    return JSONResponse({"id": str(recorded.id), "duplicate": recorded.duplicate})
