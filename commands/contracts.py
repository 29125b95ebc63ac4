"""The published contracts, generated from the models in `schemas/` (never written by hand):

- `<topic>.schema.json`: JSON Schema of every topic's payload (`commands/topic_schemas.py`);
- `asyncapi.json`: AsyncAPI 3 for every topic and its `.dlq` topic, payloads by reference to
  those files, with the Kafka key and headers;
- `openapi.json`: OpenAPI 3.1 for the HTTP endpoints of ingest and admin;
- `openapi-app-api.json`: the App API's own document, when that package is present.

`sluice schemas export` writes them to `schemas/contracts/`; `--check` (and a test) fails when
the committed files differ from what the models generate.
"""

from __future__ import annotations

import json
from importlib import metadata
from typing import TYPE_CHECKING, Any

from pydantic.json_schema import models_json_schema

from api.openapi import openapi_document as app_api_document
from commands.topic_schemas import PAYLOAD_MODELS, topic_schema
from schemas.airtable import AirtablePing
from schemas.square import SquareEvent
from schemas.topics import dlq_topic
from sluice.query import MAX_INSTANT_LENGTH, MAX_TEXT_LENGTH

if TYPE_CHECKING:
    from pathlib import Path

    from schemas.topics import Topic

ASYNCAPI_FILE = "asyncapi.json"
OPENAPI_FILE = "openapi.json"
APP_API_OPENAPI_FILE = "openapi-app-api.json"

_TOPIC_DESCRIPTIONS = {
    "square.bookings": "Square booking events, keyed by booking id (without `:version`).",
    "square.customers": "Square customer events, keyed by customer id.",
    "square.events": "Every other Square event type, keyed by its entity id.",
    "airtable.pings": "Airtable webhook notifications, keyed by webhook id.",
    "airtable.records": (
        "Record changes fetched from Airtable webhook payloads, and the reconciler's snapshots"
        " of records, keyed by record."
    ),
}

# CloudEvents Kafka binary-mode headers every message carries, and the optional ones.
_HEADERS = {
    "ce_specversion": "CloudEvents version, `1.0`",
    "ce_id": "sluice event id; consumers drop a repeat by it",
    "ce_source": "provider (`square`, `airtable`, ...)",
    "ce_type": "provider event type",
    "ce_time": "when the provider says the event happened (RFC 3339)",
    "ce_providereventid": "the provider's own event id",
    "ce_receivedat": "when sluice received it (RFC 3339)",
    "content-type": "`application/json`",
}
_OPTIONAL_HEADERS = {
    "ce_subject": "the entity id",
    "ce_entitytype": "the entity type (`booking`, `customer`, ...)",
    "traceparent": "W3C trace context, when tracing is on (SLUICE_TRACING)",
    "sluice-synthetic": "`reconcile` on events the reconciler created",
    "sluice-redrive-of": "the dead letter id this message re-publishes",
}
_DLQ_HEADERS = {
    "dlq_consumer": "the consumer that gave up on the message",
    "dlq_error_type": "exception type",
    "dlq_error": "error text (at most 2000 characters)",
    "dlq_topic": "original topic",
    "dlq_partition": "original partition",
    "dlq_offset": "original offset",
}


def _headers_schema(*, dlq: bool) -> dict[str, Any]:
    properties = {
        name: {"type": "string", "description": text}
        for name, text in {**_HEADERS, **_OPTIONAL_HEADERS, **(_DLQ_HEADERS if dlq else {})}.items()
    }
    required = [*_HEADERS, *(_DLQ_HEADERS if dlq else {})]
    return {"type": "object", "properties": properties, "required": required}


def _message_id(topic: str) -> str:
    return topic.replace(".", "-")


def asyncapi_document() -> dict[str, Any]:
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    topics: list[tuple[str, Topic, bool]] = []
    for topic in PAYLOAD_MODELS:
        topics.append((topic.value, topic, False))
        topics.append((dlq_topic(topic.value), topic, True))
    for address, topic, dlq in topics:
        message_id = _message_id(address)
        description = _TOPIC_DESCRIPTIONS.get(topic.value, f"{topic.value} events.")
        if dlq:
            description = f"Dead letters of `{topic.value}`: the original message, unchanged."
        messages[message_id] = {
            "name": message_id,
            "title": f"{address} message",
            "contentType": "application/json",
            "headers": _headers_schema(dlq=dlq),
            "payload": {"$ref": f"{topic.value}.schema.json"},
            "bindings": {"kafka": {"key": {"type": "string"}, "bindingVersion": "0.5.0"}},
        }
        channels[message_id] = {
            "address": address,
            "description": description,
            "messages": {message_id: {"$ref": f"#/components/messages/{message_id}"}},
        }
        for action in ("send", "receive"):
            operations[f"{action}-{message_id}"] = {
                "action": action,
                "channel": {"$ref": f"#/channels/{message_id}"},
                "messages": [{"$ref": f"#/channels/{message_id}/messages/{message_id}"}],
            }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "sluice events",
            "version": _version(),
            "description": (
                "Provider events as CloudEvents 1.0 JSON on Kafka. The relay sends every topic "
                "from the outbox (at least once, in commit order per key); consumers receive "
                "them and drop repeats by the `ce_id` header."
            ),
        },
        "defaultContentType": "application/json",
        "servers": {
            "kafka": {
                "host": "kafka:9092",
                "protocol": "kafka",
                "description": "KAFKA_BOOTSTRAP_SERVERS",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages},
    }


_REF = "#/components/schemas/{model}"
MAX_LOOKBACK_MINUTES = 1440  # recovery.runs.MAX_LOOKBACK_MINUTES (a test keeps them equal)
REPEATS_SHOWN = 100  # recovery.journey.REPEATS_SHOWN (a test keeps them equal)


def _json_body(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _problem(description: str) -> dict[str, Any]:
    return _json_body(description, {"$ref": _REF.format(model="Problem")})


_SIGNATURE_KEY = (
    "which configured key verified the delivery, never the key: its position in"
    " SQUARE_WEBHOOK_SIGNATURE_KEYS (from 1) or its Airtable webhook id, a colon, and the first"
    " 6 hex digits of the SHA-256 of the key as configured"
)

_SCHEMAS: dict[str, Any] = {
    "Problem": {
        "type": "object",
        "properties": {
            "error": {"type": "string", "description": "a stable reason code"},
            "detail": {"type": "string"},
            "errors": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
                },
            },
        },
        "required": ["error", "detail"],
    },
    "Accepted": {
        "type": "object",
        "properties": {
            "id": {"type": "string", "format": "uuid", "description": "the stored event's id"},
            "duplicate": {"type": "boolean", "description": "already stored by an earlier one"},
        },
        "required": ["id", "duplicate"],
    },
    "Status": {"type": "object", "properties": {"status": {"type": "string"}}},
    "Journey": {
        "type": "object",
        "properties": {
            "event": {
                "type": "object",
                "description": "the stored event, without its body, as its first delivery came",
                "properties": {
                    "headers": {
                        "type": "object",
                        "additionalProperties": {"type": "string"},
                        "description": "the delivery headers kept, the signature header included",
                    },
                    "signature_key": {
                        "type": ["string", "null"],
                        "description": _SIGNATURE_KEY,
                    },
                },
            },
            "repeats": {
                "type": "array",
                "description": "later deliveries of the event, the oldest first",
                "maxItems": REPEATS_SHOWN,
                "items": {"$ref": _REF.format(model="DeliveryRepeat")},
            },
            "repeats_total": {"type": "integer", "description": "every later delivery"},
            "outbox": {"type": "array", "items": {"type": "object"}},
            "published": {"type": ["object", "null"]},
            "outcomes": {"type": "array", "items": {"type": "object"}},
            "dead_letters": {"type": "array", "items": {"type": "object"}},
        },
        "required": [
            "event",
            "repeats",
            "repeats_total",
            "outbox",
            "published",
            "outcomes",
            "dead_letters",
        ],
    },
    "DeliveryRepeat": {
        "type": "object",
        "properties": {
            "received_at": {"type": "string", "format": "date-time"},
            "headers": {"type": "object", "additionalProperties": {"type": "string"}},
            "signature_key": {"type": ["string", "null"], "description": _SIGNATURE_KEY},
        },
        "required": ["received_at", "headers", "signature_key"],
    },
    "ReconcileSummary": {
        "type": "object",
        "properties": {
            "source": {"type": "string"},
            "scanned": {"type": "integer"},
            "created": {"type": "integer"},
            "updated": {"type": "integer"},
            "skipped": {"type": "integer"},
            "errors": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"record": {"type": "string"}, "error": {"type": "string"}},
                },
            },
            "duration_seconds": {"type": "number"},
            "by_entity": {"type": "object", "additionalProperties": {"type": "object"}},
            "passes": {
                "type": "object",
                "description": (
                    "Square: per pass (events, customers, bookings, booking_customers) what it "
                    "looked at (window or watermark) and its counts"
                ),
                "additionalProperties": {
                    "type": "object",
                    "properties": {
                        "scanned": {"type": "integer"},
                        "missing": {"type": "integer"},
                        "stale": {"type": "integer"},
                        "recorded": {"type": "integer"},
                    },
                    "required": ["scanned", "missing", "stale", "recorded"],
                },
            },
            "watermarks": {
                "type": "object",
                "description": "Square: how far each recovery pass has looked, after the run",
                "additionalProperties": {"type": "string", "format": "date-time"},
            },
        },
        "required": ["source", "scanned", "created", "updated", "skipped", "errors"],
        "additionalProperties": True,
    },
}


def _webhook(
    summary: str,
    body_model: str,
    signature_header: str,
    *,
    headers: tuple[dict[str, Any], ...] = (),
    refusals: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "tags": ["ingest"],
            "parameters": [
                {"name": signature_header, "in": "header", "required": True, "schema": {}},
                *headers,
                {
                    "name": "traceparent",
                    "in": "header",
                    "required": False,
                    "description": "W3C trace context, continued when tracing is on",
                    "schema": {"type": "string"},
                },
            ],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": {"$ref": _REF.format(model=body_model)}}
                },
            },
            "responses": {
                "200": _json_body(
                    "stored durably (or already stored)", {"$ref": _REF.format(model="Accepted")}
                ),
                "400": _problem("not an event envelope, or content the database refuses"),
                "401": _problem("signature missing or wrong"),
                "413": _problem("body larger than SLUICE_MAX_BODY_BYTES"),
                **(refusals or {}),
                "503": _problem("verification not configured, or database unavailable"),
            },
        }
    }


_SQUARE_ENVIRONMENT = {
    "name": "square-environment",
    "in": "header",
    "required": False,
    "description": (
        "Production or Sandbox, as Square sends it; another environment than SQUARE_ENVIRONMENT"
        " is refused (422). Without it a delivery is taken"
    ),
    "schema": {"type": "string"},
}


def _metrics(tag: str) -> dict[str, Any]:
    return {
        "get": {
            "summary": "Prometheus metrics (text exposition format)",
            "tags": [tag],
            "responses": {
                "200": {"description": "metrics", "content": {"text/plain": {"schema": {}}}}
            },
        }
    }


def _status(summary: str, tag: str, *, can_fail: bool = False) -> dict[str, Any]:
    responses = {"200": _json_body("ok", {"$ref": _REF.format(model="Status")})}
    if can_fail:
        responses["503"] = _problem("the database is unreachable")
    return {"get": {"summary": summary, "tags": [tag], "responses": responses}}


def openapi_document() -> dict[str, Any]:
    """The ingest service (`sluice serve`) and the admin service (`sluice admin`)."""
    _, definitions = models_json_schema(
        [(SquareEvent, "validation"), (AirtablePing, "validation")], ref_template=_REF
    )
    schemas = {**definitions.get("$defs", {}), **_SCHEMAS}
    source = {
        "name": "source",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "enum": ["square", "airtable"]},
    }
    # Bounds as sluice/query.py and recovery/admin.py read them. No `format: date-time` on the
    # window: a generated window thousands of years long would run for hours.
    instant = {"type": "string", "maxLength": MAX_INSTANT_LENGTH}
    query = [
        ("from", "Square: window start, an ISO 8601 date-time with a zone", instant),
        ("to", "Square: window end, an ISO 8601 date-time with a zone, after from", instant),
        (
            "ahead",
            (
                "Square: bookings up to SQUARE_RECONCILE_AHEAD_DAYS ahead (the nightly run); "
                "not with from or to"
            ),
            {"type": "boolean", "default": False},
        ),
        (
            "since",
            (
                "Square: search events and sweep customers from this ISO 8601 date-time with a "
                "zone, not from the watermarks"
            ),
            instant,
        ),
        (
            "lookback_minutes",
            "Airtable: sweep records changed this many minutes back; not with full",
            {"type": "integer", "minimum": 1, "maximum": MAX_LOOKBACK_MINUTES, "default": 60},
        ),
        (
            "full",
            "Airtable: sweep every record (true/false, 1/0 or yes/no)",
            {"type": "boolean", "default": False},
        ),
    ]
    reconcile = {
        "post": {
            "summary": "Run a reconcile now; answers its summary",
            "tags": ["admin"],
            "security": [{"bearer": []}],
            "parameters": [
                source,
                *(
                    {
                        "name": n,
                        "in": "query",
                        "required": False,
                        "description": f"{d}; at most once",
                        "schema": s,
                    }
                    for n, d, s in query
                ),
            ],
            "responses": {
                "200": _json_body("done", {"$ref": _REF.format(model="ReconcileSummary")}),
                "400": _problem(
                    "a query parameter is not valid (bad_request): given twice, holding a NUL, "
                    "too long, out of range, lookback_minutes with full, or ahead with from/to"
                ),
                "401": _problem("missing or wrong bearer token"),
                "404": _problem("unknown source"),
                "409": _problem("another run holds the lock"),
                "500": _json_body(
                    "done, with errors", {"$ref": _REF.format(model="ReconcileSummary")}
                ),
                "503": _problem("SLUICE_ADMIN_TOKEN is not set"),
            },
        }
    }
    events = _admin_event_paths()
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "sluice ingest and admin",
            "version": _version(),
            "description": (
                "Ingest (`sluice serve`, internet-facing, port 8000) takes provider webhooks; "
                "admin (`sluice admin`, cluster-internal, port 8001) triggers reconciles and "
                "answers what happened to each event."
            ),
        },
        "tags": [{"name": "ingest"}, {"name": "admin"}],
        "paths": {
            "/webhooks/square": _webhook(
                "Square webhook",
                "SquareEvent",
                "x-square-hmacsha256-signature",
                headers=(_SQUARE_ENVIRONMENT,),
                refusals={
                    "422": _problem(
                        "validly signed, but from another Square environment than"
                        " SQUARE_ENVIRONMENT (wrong_environment)"
                    )
                },
            ),
            "/webhooks/airtable": _webhook(
                "Airtable webhook notification", "AirtablePing", "x-airtable-content-mac"
            ),
            "/healthz": _status("Liveness (ingest and admin)", "ingest"),
            "/readyz": _status("Readiness: the database answers", "ingest", can_fail=True),
            "/metrics": _metrics("ingest"),
            "/admin/reconcile/{source}": reconcile,
            **events,
        },
        "components": {
            "schemas": dict(sorted(schemas.items())),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _version() -> str:
    try:
        return metadata.version("sluice")
    except metadata.PackageNotFoundError:
        return "0.0.0"


def _render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


def _admin_event_paths() -> dict[str, Any]:
    """`GET /admin/events/{ref}` and `GET /admin/events?entity=` (recovery/admin_events.py)."""
    refused = {
        "401": _problem("missing or wrong bearer token"),
        "503": _problem("SLUICE_ADMIN_TOKEN is not set, or the database is unreachable"),
    }
    text = {"type": "string", "maxLength": MAX_TEXT_LENGTH}
    journey = {
        "summary": "An event's journey: received, stored, published, each consumer's outcome",
        "tags": ["admin"],
        "security": [{"bearer": []}],
        "parameters": [
            {
                "name": "ref",
                "in": "path",
                "required": True,
                "description": "sluice's event id or the provider's",
                "schema": text,
            }
        ],
        "responses": {
            "200": _json_body("found", {"$ref": _REF.format(model="Journey")}),
            "400": _problem("not an event id (too long, or holding a NUL)"),
            "404": _problem("no stored event has this id"),
            **refused,
        },
    }
    by_entity = {
        "summary": "What the consumers did lately with events about one entity, newest first",
        "tags": ["admin"],
        "security": [{"bearer": []}],
        "parameters": [
            {
                "name": "entity",
                "in": "query",
                "required": True,
                "description": "a booking, customer or Airtable record id; at most once",
                "schema": text,
            },
            {
                "name": "limit",
                "in": "query",
                "required": False,
                "description": "at most once",
                "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
            },
        ],
        "responses": {
            "200": _json_body("the outcomes", {"type": "object"}),
            "400": _problem("entity missing, or a parameter not valid"),
            **refused,
        },
    }
    return {"/admin/events": {"get": by_entity}, "/admin/events/{ref}": {"get": journey}}


def contract_files() -> dict[str, str]:
    """File name → content of every contract, as `sluice schemas export` writes them."""
    files = {f"{topic.value}.schema.json": _render(topic_schema(topic)) for topic in PAYLOAD_MODELS}
    files[ASYNCAPI_FILE] = _render(asyncapi_document())
    files[OPENAPI_FILE] = _render(openapi_document())
    files[APP_API_OPENAPI_FILE] = _render(app_api_document())
    return files


def export_contracts(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, content in contract_files().items():
        path = directory / name
        path.write_text(content)
        written.append(path)
    return written


def stale_contracts(directory: Path) -> list[str]:
    """Contract files missing from `directory`, different there, or there but no longer made."""
    wanted = contract_files()
    stale = [
        name
        for name, content in wanted.items()
        if not (directory / name).exists() or (directory / name).read_text() != content
    ]
    made_by_us = {p.name for p in directory.glob("*.json")} if directory.exists() else set()
    stale.extend(sorted(made_by_us - set(wanted)))
    return stale
