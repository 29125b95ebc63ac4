"""The OpenAPI 3.1 document of the App API, served at `GET /api/openapi.json`.

Request bodies come from the pydantic models the API validates with, so the document cannot
drift from them; a test checks that every route of the app is documented here.
"""

from __future__ import annotations

from typing import Any

from pydantic.json_schema import models_json_schema

from schemas.app_api import BulkStatus, Claim, JobPatch, LeadPatch, Unclaim

_REF = "#/components/schemas/{model}"
_BODIES = (JobPatch, BulkStatus, LeadPatch, Claim, Unclaim)


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
_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
_KEY = {
    "name": "X-Idempotency-Key",
    "in": "header",
    "required": True,
    "description": "a repeat with the same key and body returns the first response",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
}
_IF_NONE_MATCH = {
    "name": "If-None-Match",
    "in": "header",
    "required": False,
    "schema": {"type": "string"},
}
_LIMIT = {
    "name": "limit",
    "in": "query",
    "required": False,
    "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 500},
}
_OBJECT = {"type": "object", "additionalProperties": True}


def _read(summary: str, params: list[dict[str, Any]], *, not_found: bool) -> dict[str, Any]:
    responses = {
        "200": {**_json("the current state; ETag header set", _OBJECT)},
        "304": {"description": "unchanged since the ETag sent in If-None-Match"},
        "400": _json("a query parameter is not valid"),
        **_PROBLEMS,
    }
    if not_found:
        responses["404"] = _json("no such record")
    return {"summary": summary, "parameters": [*params, _IF_NONE_MATCH], "responses": responses}


def _write(summary: str, body: str, params: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "summary": summary,
        "parameters": [*params, _KEY],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": _REF.format(model=body)}}},
        },
        "responses": {
            "200": _json(
                "the record(s) after the change (or the first response, replayed)", _OBJECT
            ),
            "400": _json("no X-Idempotency-Key, or the body is not JSON"),
            "404": _json("no such record"),
            "409": _json("refused by the record's state (transition, claim, deletion)"),
            "413": _json("body too large"),
            "422": _json(
                "invalid body, a source-owned column, or the key reused with another body"
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
        "properties": {"error": {"type": "string"}, "detail": {"type": "string"}},
        "additionalProperties": True,
    }
    window = [
        {"name": n, "in": "query", "required": False, "schema": {"type": "string"}}
        for n in ("from", "to")
    ]
    lead_filters = [
        {"name": "claimed_by", "in": "query", "required": False, "schema": {"type": "string"}},
        {
            "name": "include_deleted",
            "in": "query",
            "required": False,
            "schema": {"type": "boolean"},
        },
    ]
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
                "get": _read("Jobs starting in [from, to)", [*window, _LIMIT], not_found=False)
            },
            "/api/jobs/status": {
                "post": _write("One work status for many jobs, all or nothing", "BulkStatus", [])
            },
            "/api/jobs/{id}": {
                "get": _read("One job", [_ID], not_found=True),
                "patch": _write("Staff work on a job", "JobPatch", [_ID]),
            },
            "/api/leads": {"get": _read("Leads", [*lead_filters, _LIMIT], not_found=False)},
            "/api/leads/{id}": {
                "get": _read(
                    "One lead, its write-back status and conflicts", [_ID], not_found=True
                ),
                "patch": _write("A lead's notes", "LeadPatch", [_ID]),
            },
            "/api/leads/{id}/claim": {"post": _write("Claim a lead", "Claim", [_ID])},
            "/api/leads/{id}/unclaim": {"post": _write("Release a lead", "Unclaim", [_ID])},
            "/api/changes": {
                "get": {
                    "summary": "Committed projection changes as Server-Sent Events",
                    "parameters": [
                        {
                            "name": "Last-Event-ID",
                            "in": "header",
                            "required": False,
                            "schema": {"type": "string"},
                        }
                    ],
                    "responses": {
                        "200": {
                            "description": "an endless event stream",
                            "content": {"text/event-stream": {"schema": {"type": "string"}}},
                        },
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
