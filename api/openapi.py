"""The OpenAPI 3.1 document of the App API, served at `GET /api/openapi.json`.

Request bodies come from the pydantic models the API validates with, and the bounds of query
parameters from the constants the endpoints read them with, so the document cannot drift from
either; a test checks that every route of the app is documented here.
"""

from __future__ import annotations

from typing import Any

from pydantic.json_schema import models_json_schema

from api import jobs, leads
from api.idempotency import MAX_KEY_LENGTH
from api.paging import MAX_CURSOR_LENGTH
from consumers.lead_sync import SYNC_STATES
from schemas.app_api import (
    MAX_ACTOR_LENGTH,
    BulkStatus,
    Claim,
    JobPatch,
    LeadPatch,
    Resolve,
    Retry,
    Unclaim,
)
from sluice.jsontext import MAX_DEPTH, MAX_NUMBER_LENGTH
from sluice.query import BIGINT_MAX, MAX_INSTANT_LENGTH

_REF = "#/components/schemas/{model}"
_BODIES = (JobPatch, BulkStatus, LeadPatch, Claim, Unclaim, Resolve, Retry)


def _json(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "description": description,
        "content": {
            "application/json": {"schema": schema or {"$ref": _REF.format(model="Problem")}}
        },
    }


_PROBLEMS = {
    "401": _json("missing or wrong bearer token"),
    "503": _json("SLUICE_API_TOKEN is not set, or the database is unavailable"),
}
_BAD_QUERY = _json(
    "a query parameter (bad_query) or header (bad_header) is not valid: given twice, holding "
    "a NUL, too long, or out of range; `parameter` names it"
)
_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
_KEY = {
    "name": "X-Idempotency-Key",
    "in": "header",
    "required": True,
    "description": "a repeat with the same key and body returns the first response",
    "schema": {"type": "string", "minLength": 1, "maxLength": MAX_KEY_LENGTH},
}
_IF_NONE_MATCH = {
    "name": "If-None-Match",
    "in": "header",
    "required": False,
    "schema": {"type": "string"},
}
_IF_MATCH = {
    "name": "If-Match",
    "in": "header",
    "required": False,
    "description": (
        "the row's ETag from a read or a change (`*`: any version); a row changed since answers "
        "412 and nothing changes. Required (428 without) when SLUICE_API_REQUIRE_IF_MATCH is set"
    ),
    "schema": {"type": "string"},
}
_ETAG = {
    "ETag": {"description": "the row's strong ETag", "schema": {"type": "string"}},
}
_OBJECT = {"type": "object", "additionalProperties": True}


def _query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": f"{description}; at most once",
        "schema": schema,
    }


def _limit(module_max: int, default: int) -> dict[str, Any]:
    return _query(
        "limit",
        "most rows answered",
        {"type": "integer", "minimum": 1, "maximum": module_max, "default": default},
    )


_WINDOW = [
    _query(
        name,
        f"{what}: an ISO 8601 date (midnight UTC) or date-time with a zone; empty means none",
        {
            "type": "string",
            "maxLength": MAX_INSTANT_LENGTH,
            "anyOf": [{"format": "date"}, {"format": "date-time"}],
        },
    )
    for name, what in (("from", "jobs starting at or after"), ("to", "jobs starting before"))
]
_CURSOR = _query(
    "cursor",
    "the page after the one whose `next` link carried it (opaque; keep the other parameters)",
    {"type": "string", "maxLength": MAX_CURSOR_LENGTH},
)
_JOB_FILTERS = [
    *_WINDOW,
    *(
        _query(name, f"only jobs whose {column} is this", {"type": "string", "maxLength": 255})
        for name, column in jobs.JOB_FILTERS.items()
    ),
    _CURSOR,
]
_LEAD_FILTERS = [
    _query(
        "claimed_by",
        "only leads claimed by this actor",
        {"type": "string", "minLength": 1, "maxLength": MAX_ACTOR_LENGTH},
    ),
    _query(
        "lead_status",
        "only leads with this Airtable lead status",
        {"type": "string", "maxLength": MAX_ACTOR_LENGTH},
    ),
    _query(
        "sync_status",
        "only leads whose write-back is in this state",
        {"type": "string", "enum": list(SYNC_STATES)},
    ),
    _query(
        "conflict",
        "true: only leads with an open write-back conflict; false: only those without",
        {"type": "boolean"},
    ),
    _CURSOR,
    _query(
        "include_deleted",
        "also leads deleted in Airtable (true/false, 1/0 or yes/no)",
        {"type": "boolean", "default": False},
    ),
]
_EVENT_ID = {"type": "integer", "minimum": 0, "maximum": BIGINT_MAX}
_RESUME = [
    {
        "name": "Last-Event-ID",
        "in": "header",
        "required": False,
        "description": (
            "resume after this event (sent by EventSource on reconnect); 0: replay the log from "
            "its start; empty: none"
        ),
        "schema": _EVENT_ID,
    },
    _query("last_event_id", "as Last-Event-ID, for clients that cannot set it", _EVENT_ID),
    _query("entity", "only this table's changes", {"type": "string", "enum": ["jobs", "leads"]}),
    _query(
        "key",
        "only this row's changes (a booking or record id); needs entity",
        {"type": "string", "maxLength": 200},
    ),
]


def _read(summary: str, params: list[dict[str, Any]], *, not_found: bool) -> dict[str, Any]:
    responses = {
        "200": {**_json("the current state; ETag header set", _OBJECT), "headers": _ETAG},
        "304": {"description": "unchanged since the ETag sent in If-None-Match"},
        "400": _BAD_QUERY,
        **_PROBLEMS,
    }
    if not_found:
        responses["404"] = _json("no such record")
    return {"summary": summary, "parameters": [*params, _IF_NONE_MATCH], "responses": responses}


def _write(
    summary: str, body: str, params: list[dict[str, Any]], *, one_row: bool = True
) -> dict[str, Any]:
    """A change; `one_row`: of one row, which takes If-Match and answers its ETag."""
    preconditions: dict[str, Any] = {
        "412": {
            **_json(
                "the row changed since the If-Match ETag (precondition_failed): nothing changed; "
                "`current` holds the row, `etag` and the ETag header its tag"
            ),
            "headers": _ETAG,
        },
        "428": _json("If-Match is required here and was not sent (if_match_required)"),
    }
    return {
        "summary": summary,
        "parameters": [*params, _KEY, *([_IF_MATCH] if one_row else [])],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": _REF.format(model=body)}}},
        },
        "responses": {
            "200": {
                **_json(
                    "the record(s) after the change (or the first response, replayed)", _OBJECT
                ),
                **({"headers": _ETAG} if one_row else {}),
            },
            **(preconditions if one_row else {}),
            "400": _json(
                f"no X-Idempotency-Key (idempotency_key_required), one over {MAX_KEY_LENGTH} "
                "characters (idempotency_key_too_long) or given twice (bad_header), or the body "
                "is not JSON (invalid_json)"
            ),
            "404": _json("no such record"),
            "409": _json("refused by the record's state (transition, claim, deletion)"),
            "413": _json("body larger than SLUICE_MAX_BODY_BYTES (too_large)"),
            "422": _json(
                "a field not valid, named in `errors` (invalid_body; also a NUL in any string), "
                f"nesting deeper than {MAX_DEPTH} levels (too_deep), a number over "
                f"{MAX_NUMBER_LENGTH} characters (number_too_long), a source-owned column "
                "(source_owned), or the key reused with another body (idempotency_key_reused)"
            ),
            **_PROBLEMS,
        },
    }


def openapi_document() -> dict[str, Any]:
    _, defs = models_json_schema([(m, "validation") for m in _BODIES], ref_template=_REF)
    schemas = dict(defs.get("$defs", {}))
    schemas["Problem"] = {
        "type": "object",
        "required": ["error", "detail"],
        "properties": {
            "error": {"type": "string", "description": "a stable reason code"},
            "detail": {"type": "string"},
            "parameter": {"type": "string", "description": "the query parameter or header"},
            "errors": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
                },
            },
        },
        "additionalProperties": True,
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "sluice App API", "version": "1"},
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": {
            "/api/jobs": {
                "get": _read(
                    "Jobs starting in [from, to), by start then booking id, a page at a time "
                    "(`next`: the next page's link, null on the last; also a Link header)",
                    [*_JOB_FILTERS, _limit(jobs.MAX_LIST, jobs.DEFAULT_LIST)],
                    not_found=False,
                )
            },
            "/api/jobs/status": {
                "post": _write(
                    "One work status for many jobs, all or nothing",
                    "BulkStatus",
                    [],
                    one_row=False,
                )
            },
            "/api/jobs/{id}": {
                "get": _read("One job", [_ID], not_found=True),
                "patch": _write("Staff work on a job", "JobPatch", [_ID]),
            },
            "/api/leads": {
                "get": _read(
                    "Leads by record id, a page at a time (`next` and a Link header, as jobs)",
                    [*_LEAD_FILTERS, _limit(leads.MAX_LIST, leads.DEFAULT_LIST)],
                    not_found=False,
                )
            },
            "/api/leads/{id}": {
                "get": _read(
                    "One lead, its write-back status, conflicts and skipped cells",
                    [_ID],
                    not_found=True,
                ),
                "patch": _write("A lead's notes", "LeadPatch", [_ID]),
            },
            "/api/leads/{id}/claim": {"post": _write("Claim a lead", "Claim", [_ID])},
            "/api/leads/{id}/unclaim": {"post": _write("Release a lead", "Unclaim", [_ID])},
            "/api/leads/{id}/resolve": {
                "post": _write(
                    "Resolve a write-back conflict: keep the app's value (pushed again) or "
                    "adopt Airtable's; audited. 409 no_conflict when none is open",
                    "Resolve",
                    [_ID],
                )
            },
            "/api/leads/{id}/retry": {
                "post": _write(
                    "Push a failed lead again now; audited. 409 not_failed otherwise",
                    "Retry",
                    [_ID],
                )
            },
            "/api/changes": {
                "get": {
                    "summary": "Committed projection changes as Server-Sent Events",
                    "parameters": _RESUME,
                    "responses": {
                        "200": {
                            "description": "an endless event stream",
                            "content": {"text/event-stream": {"schema": {"type": "string"}}},
                        },
                        "400": _BAD_QUERY,
                        **_PROBLEMS,
                    },
                }
            },
            "/api/openapi.json": {
                "get": {
                    "summary": "This document",
                    "security": [],
                    "responses": {"200": {**_json("OpenAPI 3.1", _OBJECT)}},
                }
            },
        },
    }
