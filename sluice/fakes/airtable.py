"""A fake Airtable Web API: a Starlette app that pyairtable talks to unchanged.

It keeps bases, tables, records and webhooks in memory and speaks Airtable's JSON: record
list/get/create/update/delete (at most 10 records per write), the base schema, webhook
create/list/refresh/delete/enableNotifications, and payload listing with cursors and
`mightHaveMore`. Every change to records becomes one base transaction and one payload for each
webhook watching the table, exactly as Airtable reports them (`createdRecordsById`,
`changedRecordsById` with only the changed cells, `destroyedRecordIds`). Changes made through
the Web API come back as `actionMetadata.source = publicApi` by the token's user (`user_id`),
changes made "in the UI" as `client` by a colleague (`person_user_id`), so echo suppression can
be tested against it.

Record listing pages 100 at a time with an `offset`, honours `returnFieldsByFieldId` and
`fields[]`, and of `filterByFormula` exactly the shape the reconciler sends,
`IS_AFTER(LAST_MODIFIED_TIME(), DATETIME_PARSE('<ISO 8601>'))`, against each record's last
modified time (set when it is created or a cell of it changes); any other formula gets Airtable's
422 `INVALID_FILTER_BY_FORMULA`. The options of every listing are kept in `listings`.

For tests it records each request's arrival time, can answer 429 or 5xx on demand, and can
enforce Airtable's 5 requests/s per base itself. It can also behave as Airtable's documentation
says Airtable may: split one action over several payloads that share its base transaction
number, list an error payload and stop serving the webhook, and report a deleted table in
`destroyedTableIds`. `POST /_fake/bases/{base}/tables/{table}/changes`
lets `sluice simulate airtable` make a change as if a person had made it in Airtable's UI.
"""

from __future__ import annotations

import base64
import re
import secrets
import string
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from starlette.requests import Request

WEBHOOK_LIFETIME = timedelta(days=7)
MAX_RECORDS_PER_WRITE = 10
MAX_PAYLOADS_PER_PAGE = 50
MAX_WEBHOOKS_PER_BASE = 10
MAX_PAGE_SIZE = 100
_ID_ALPHABET = string.ascii_letters + string.digits
# The one filterByFormula the fake understands (what recovery's sweep sends for a lookback).
_MODIFIED_AFTER = re.compile(r"IS_AFTER\(LAST_MODIFIED_TIME\(\), DATETIME_PARSE\('([^']+)'\)\)")


def airtable_id(prefix: str) -> str:
    return prefix + "".join(secrets.choice(_ID_ALPHABET) for _ in range(14))


def _ts(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _Refused(Exception):  # noqa: N818 - a control-flow signal carrying the answer
    """A request Airtable would refuse; the app answers with `response`."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


async def _refused_response(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, _Refused)  # noqa: S101 - registered for _Refused only
    return exc.response


def _error(status: int, kind: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"type": kind, "message": message}}, status_code=status)


@dataclass
class FakeField:
    id: str
    name: str
    type: str
    options: dict[str, Any] | None = None

    def schema(self) -> dict[str, Any]:
        data: dict[str, Any] = {"id": self.id, "name": self.name, "type": self.type}
        if self.options is not None:
            data["options"] = self.options
        return data

    def payload_value(self, value: Any) -> Any:  # noqa: ANN401 - any cell value
        # Webhook payloads give select cells as choice objects, the records API as names.
        if self.type == "singleSelect" and isinstance(value, str) and self.options:
            for choice in self.options.get("choices", []):
                if choice["name"] == value:
                    return dict(choice)
            return {"id": airtable_id("sel"), "name": value, "color": "grayLight2"}
        return value


@dataclass
class FakeRecord:
    id: str
    created_time: datetime
    cells: dict[str, Any]  # by field id, records-API format
    modified_time: datetime | None = None  # LAST_MODIFIED_TIME(): created_time until a change

    def __post_init__(self) -> None:
        if self.modified_time is None:
            self.modified_time = self.created_time


@dataclass
class FakeTable:
    id: str
    name: str
    fields: list[FakeField]
    records: dict[str, FakeRecord] = field(default_factory=dict)
    view_id: str = field(default_factory=lambda: airtable_id("viw"))

    def field(self, id_or_name: str) -> FakeField:
        for candidate in self.fields:
            if id_or_name in (candidate.id, candidate.name):
                return candidate
        raise KeyError(id_or_name)

    def schema(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "primaryFieldId": self.fields[0].id,
            "fields": [f.schema() for f in self.fields],
            "views": [{"id": self.view_id, "name": "Grid view", "type": "grid"}],
        }

    def record_json(
        self, record: FakeRecord, *, by_id: bool, only: set[str] | None = None
    ) -> dict[str, Any]:
        fields = {}
        for field_id, value in record.cells.items():
            if value in (None, "", [], False):
                continue  # Airtable leaves empty cells out
            if only is not None and field_id not in only:
                continue
            fields[field_id if by_id else self.field(field_id).name] = value
        return {"id": record.id, "createdTime": _ts(record.created_time), "fields": fields}


@dataclass
class FakeWebhook:
    id: str
    base_id: str
    mac_secret: bytes
    notification_url: str | None
    specification: dict[str, Any]
    expiration_time: datetime
    created_time: datetime
    notifications_enabled: bool = True
    # Airtable disables a webhook it can no longer serve, after an error payload says why.
    enabled: bool = True
    payloads: list[dict[str, Any]] = field(default_factory=list)

    @property
    def mac_secret_base64(self) -> str:
        return base64.b64encode(self.mac_secret).decode()

    def watches(self, table_id: str, change_type: str, source: str) -> bool:
        filters = self.specification.get("options", {}).get("filters", {})
        if "tableData" not in filters.get("dataTypes", []):
            return False
        scope = filters.get("recordChangeScope")
        if scope and scope != table_id:
            return False
        change_types = filters.get("changeTypes")
        if change_types and change_type not in change_types:
            return False
        sources = filters.get("fromSources")
        return not sources or source in sources

    def include_previous(self) -> bool:
        includes = self.specification.get("options", {}).get("includes") or {}
        return bool(includes.get("includePreviousCellValues"))

    def json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "client",
            "isHookEnabled": self.enabled,
            "notificationUrl": self.notification_url,
            "cursorForNextPayload": len(self.payloads) + 1,
            "areNotificationsEnabled": self.notifications_enabled,
            "lastSuccessfulNotificationTime": None,
            "lastNotificationResult": None,
            "createdTime": _ts(self.created_time),
            "expirationTime": _ts(self.expiration_time),
            "specification": self.specification,
        }


@dataclass
class FakeBase:
    id: str
    name: str
    tables: dict[str, FakeTable] = field(default_factory=dict)
    webhooks: dict[str, FakeWebhook] = field(default_factory=dict)
    transaction_number: int = 0

    def table(self, id_or_name: str) -> FakeTable:
        for table in self.tables.values():
            if id_or_name in (table.id, table.name):
                return table
        raise KeyError(id_or_name)


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    at: float  # time.monotonic() on arrival
    method: str
    path: str
    base_id: str | None
    status: int


@dataclass
class _Injected:
    status: int
    remaining: int
    path_contains: str | None


@dataclass(frozen=True, slots=True)
class _Change:
    """One record change inside a base transaction, before it becomes payload JSON."""

    table: FakeTable
    record: FakeRecord
    kind: str  # add | update | remove
    changed: dict[str, Any]
    previous: dict[str, Any]


class FakeAirtable:
    def __init__(
        self,
        token: str = "patFAKEsluice.dev",  # noqa: S107 - the fake's own, public dev token
        *,
        rate_limit_per_base: int | None = None,
        user_id: str = "usrFAKEsluiceDev",
        person_user_id: str = "usrFAKEsalesTeam",
    ) -> None:
        self.token = token
        self.user_id = user_id  # the token's owner: Web API changes are made as this user
        self.person_user_id = person_user_id
        self.rate_limit_per_base = rate_limit_per_base
        self.bases: dict[str, FakeBase] = {}
        self.requests: list[RecordedRequest] = []
        self.listings: list[dict[str, Any]] = []  # each List records request's options
        # Called with each request before it is answered (tests use it to crash things).
        self.on_request: Callable[[RecordedRequest], None] | None = None
        self._injected: list[_Injected] = []
        self._recent: dict[str, deque[float]] = {}
        self.app = Starlette(
            routes=self._routes(), exception_handlers={_Refused: _refused_response}
        )

    # ---- setting up and changing data from Python (tests, dev) ----

    def add_base(self, name: str = "Sales", base_id: str | None = None) -> FakeBase:
        base = FakeBase(id=base_id or airtable_id("app"), name=name)
        self.bases[base.id] = base
        return base

    def add_table(
        self,
        base_id: str,
        name: str,
        fields: list[tuple[str, str] | tuple[str, str, dict[str, Any]]],
        table_id: str | None = None,
    ) -> FakeTable:
        made = []
        for spec in fields:
            field_name, kind, *options = spec
            made.append(
                FakeField(airtable_id("fld"), field_name, kind, options[0] if options else None)
            )
        table = FakeTable(id=table_id or airtable_id("tbl"), name=name, fields=made)
        self.bases[base_id].tables[table.id] = table
        return table

    def create_records(
        self, base_id: str, table: str, rows: list[Mapping[str, Any]], *, source: str = "client"
    ) -> list[str]:
        base = self.bases[base_id]
        fake_table = base.table(table)
        changes = []
        for row in rows:
            cells = {fake_table.field(k).id: v for k, v in row.items()}
            record = FakeRecord(airtable_id("rec"), datetime.now(UTC), cells)
            fake_table.records[record.id] = record
            changes.append(_Change(fake_table, record, "add", cells, {}))
        self._commit(base, changes, source)
        return [c.record.id for c in changes]

    def update_records(
        self,
        base_id: str,
        table: str,
        updates: Mapping[str, Mapping[str, Any]],
        *,
        source: str = "client",
        split: int = 1,
    ) -> None:
        """Change cells; with `split`, the action's cells are spread over that many payloads
        sharing one base transaction number, as Airtable may do with one action."""
        base = self.bases[base_id]
        fake_table = base.table(table)
        changes = []
        for record_id, row in updates.items():
            record = fake_table.records[record_id]
            changed, previous = {}, {}
            for key, value in row.items():
                field_id = fake_table.field(key).id
                if record.cells.get(field_id) != value:
                    previous[field_id] = record.cells.get(field_id)
                    changed[field_id] = value
                    record.cells[field_id] = value
            if changed:
                record.modified_time = datetime.now(UTC)
                changes.append(_Change(fake_table, record, "update", changed, previous))
        self._commit(base, changes, source, split=split)

    def destroy_records(
        self, base_id: str, table: str, record_ids: list[str], *, source: str = "client"
    ) -> None:
        base = self.bases[base_id]
        fake_table = base.table(table)
        changes = [
            _Change(fake_table, fake_table.records.pop(rid), "remove", {}, {}) for rid in record_ids
        ]
        self._commit(base, changes, source)

    def destroy_table(self, base_id: str, table: str) -> str:
        """Delete a table: one payload listing it in `destroyedTableIds`."""
        base = self.bases[base_id]
        gone = base.tables.pop(base.table(table).id)
        base.transaction_number += 1
        for webhook in self._live_webhooks(base):
            if webhook.watches(gone.id, "remove", "client"):
                webhook.payloads.append(
                    {**self._payload_head(base, "client"), "destroyedTableIds": [gone.id]}
                )
        return gone.id

    def break_webhook(self, base_id: str, webhook_id: str, code: str = "INVALID_HOOK") -> None:
        """The webhook fails at Airtable: an error payload, then no more payloads."""
        base = self.bases[base_id]
        webhook = base.webhooks[webhook_id]
        webhook.payloads.append(
            {
                "timestamp": _ts(datetime.now(UTC)),
                "baseTransactionNumber": base.transaction_number,
                "payloadFormat": "v0",
                "error": True,
                "code": code,
            }
        )
        webhook.enabled = False

    def fail_next(self, status: int, times: int = 1, *, path_contains: str | None = None) -> None:
        """Answer the next `times` matching requests with `status` (429, 500, 503...)."""
        self._injected.append(_Injected(status, times, path_contains))

    def add_webhook(
        self, base_id: str, notification_url: str | None, specification: dict[str, Any]
    ) -> FakeWebhook:
        base = self.bases[base_id]
        now = datetime.now(UTC)
        webhook = FakeWebhook(
            id=airtable_id("ach"),
            base_id=base_id,
            mac_secret=secrets.token_bytes(32),
            notification_url=notification_url,
            specification=specification,
            expiration_time=now + WEBHOOK_LIFETIME,
            created_time=now,
        )
        base.webhooks[webhook.id] = webhook
        return webhook

    def requests_for(self, base_id: str, path_contains: str = "") -> list[RecordedRequest]:
        return [r for r in self.requests if r.base_id == base_id and path_contains in r.path]

    def _commit(
        self, base: FakeBase, changes: list[_Change], source: str, *, split: int = 1
    ) -> None:
        if not changes:
            return
        base.transaction_number += 1
        parts = _split(changes, split)
        for webhook in self._live_webhooks(base):
            for part in parts:
                tables: dict[str, dict[str, Any]] = {}
                for change in part:
                    if not webhook.watches(change.table.id, change.kind, source):
                        continue
                    entry = tables.setdefault(change.table.id, {})
                    _describe(entry, change, include_previous=webhook.include_previous())
                if tables:
                    webhook.payloads.append(
                        {**self._payload_head(base, source), "changedTablesById": tables}
                    )

    def _live_webhooks(self, base: FakeBase) -> list[FakeWebhook]:
        now = datetime.now(UTC)
        return [w for w in base.webhooks.values() if w.expiration_time > now and w.enabled]

    def _payload_head(self, base: FakeBase, source: str) -> dict[str, Any]:
        return {
            "timestamp": _ts(datetime.now(UTC)),
            "baseTransactionNumber": base.transaction_number,
            "actionMetadata": {"source": source, "sourceMetadata": {"user": self._actor(source)}},
            "payloadFormat": "v0",
        }

    def _actor(self, source: str) -> dict[str, str]:
        # Web API changes are the token owner's; changes "in the UI" are a colleague's.
        if source == "publicApi":
            return {
                "id": self.user_id,
                "email": "dev@example.com",
                "permissionLevel": "create",
                "name": "Dev User",
            }
        return {
            "id": self.person_user_id,
            "email": "sales@example.com",
            "permissionLevel": "edit",
            "name": "Sales Person",
        }

    # ---- HTTP ----

    def _routes(self) -> list[Route]:
        hooks = "/v0/bases/{base_id}/webhooks"
        records = "/v0/{base_id}/{table}"
        return [
            Route("/v0/meta/bases/{base_id}/tables", self._schema, methods=["GET"]),
            Route(hooks, self._list_webhooks, methods=["GET"]),
            Route(hooks, self._create_webhook, methods=["POST"]),
            Route(hooks + "/{webhook_id}", self._delete_webhook, methods=["DELETE"]),
            Route(hooks + "/{webhook_id}/refresh", self._refresh_webhook, methods=["POST"]),
            Route(hooks + "/{webhook_id}/enableNotifications", self._enable, methods=["POST"]),
            Route(hooks + "/{webhook_id}/payloads", self._payloads, methods=["GET"]),
            Route("/_fake/bases/{base_id}/tables/{table}/changes", self._change, methods=["POST"]),
            Route(records + "/listRecords", self._list_records, methods=["POST"]),
            Route(records, self._list_records, methods=["GET"]),
            Route(records, self._create_records, methods=["POST"]),
            Route(records, self._update_records, methods=["PATCH", "PUT"]),
            Route(records, self._delete_records, methods=["DELETE"]),
            Route(records + "/{record_id}", self._get_record, methods=["GET"]),
            Route(records + "/{record_id}", self._update_record, methods=["PATCH", "PUT"]),
            Route(records + "/{record_id}", self._delete_record, methods=["DELETE"]),
        ]

    def _gate(self, request: Request) -> FakeBase:
        """Authentication, injected failures, rate limit and base lookup, in Airtable's order.

        Raises `_Refused` with Airtable's answer when the request does not get through."""
        base_id = request.path_params.get("base_id")
        status = self._gate_status(request, base_id)
        entry = RecordedRequest(time.monotonic(), request.method, request.url.path, base_id, status)
        self.requests.append(entry)
        if self.on_request is not None:
            self.on_request(entry)
        if status == 401:
            raise _Refused(_error(401, "AUTHENTICATION_REQUIRED", "Authentication required"))
        if status == 429:
            raise _Refused(
                JSONResponse(
                    {
                        "errors": [
                            {
                                "error": "RATE_LIMIT_REACHED",
                                "message": "Rate limit exceeded. Please try again later",
                            }
                        ]
                    },
                    status_code=429,
                )
            )
        if status >= 500:
            raise _Refused(_error(status, "SERVER_ERROR", "Try again. If the problem persists..."))
        base = self.bases.get(base_id or "")
        if base is None:
            raise _Refused(JSONResponse({"error": "NOT_FOUND"}, status_code=404))
        return base

    def _gate_status(self, request: Request, base_id: str | None) -> int:
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return 401
        for injected in self._injected:
            wanted = injected.path_contains
            if injected.remaining > 0 and (wanted is None or wanted in request.url.path):
                injected.remaining -= 1
                return injected.status
        # A change "in the UI" (/_fake/...) is a person's, not an API client's: not rate limited.
        api_call = not request.url.path.startswith("/_fake/")
        if self.rate_limit_per_base is not None and base_id is not None and api_call:
            recent = self._recent.setdefault(base_id, deque())
            now = time.monotonic()
            while recent and now - recent[0] >= 1.0:
                recent.popleft()
            if len(recent) >= self.rate_limit_per_base:
                return 429
            recent.append(now)
        return 200

    async def _schema(self, request: Request) -> Response:
        base = self._gate(request)
        return JSONResponse({"tables": [t.schema() for t in base.tables.values()]})

    async def _list_webhooks(self, request: Request) -> Response:
        base = self._gate(request)
        return JSONResponse({"webhooks": [w.json() for w in base.webhooks.values()]})

    async def _create_webhook(self, request: Request) -> Response:
        base = self._gate(request)
        body = await request.json()
        spec = body.get("specification")
        if not isinstance(spec, dict) or "options" not in spec:
            return _error(422, "INVALID_REQUEST_UNKNOWN", "specification.options is required")
        if len(base.webhooks) >= MAX_WEBHOOKS_PER_BASE:
            return _error(422, "TOO_MANY_WEBHOOKS_BY_OAUTH_INTEGRATION_IN_BASE", "limit reached")
        webhook = self.add_webhook(base.id, body.get("notificationUrl"), spec)
        return JSONResponse(
            {
                "id": webhook.id,
                "macSecretBase64": webhook.mac_secret_base64,
                "expirationTime": _ts(webhook.expiration_time),
            }
        )

    def _webhook(self, base: FakeBase, request: Request) -> FakeWebhook:
        webhook = base.webhooks.get(request.path_params["webhook_id"])
        if webhook is None or webhook.expiration_time <= datetime.now(UTC):
            raise _Refused(_error(404, "NOT_FOUND", "webhook not found"))
        return webhook

    async def _delete_webhook(self, request: Request) -> Response:
        base = self._gate(request)
        if base.webhooks.pop(request.path_params["webhook_id"], None) is None:
            return _error(404, "NOT_FOUND", "webhook not found")
        return Response(status_code=200)

    async def _refresh_webhook(self, request: Request) -> Response:
        base = self._gate(request)
        webhook = self._webhook(base, request)
        webhook.expiration_time = datetime.now(UTC) + WEBHOOK_LIFETIME
        return JSONResponse({"expirationTime": _ts(webhook.expiration_time)})

    async def _enable(self, request: Request) -> Response:
        base = self._gate(request)
        webhook = self._webhook(base, request)
        webhook.notifications_enabled = bool((await request.json()).get("enable"))
        return Response(status_code=200)

    async def _payloads(self, request: Request) -> Response:
        base = self._gate(request)
        webhook = self._webhook(base, request)
        try:
            cursor = int(request.query_params.get("cursor", "1"))
            limit = int(request.query_params.get("limit", str(MAX_PAYLOADS_PER_PAGE)))
        except ValueError:
            return _error(422, "INVALID_REQUEST_UNKNOWN", "cursor and limit must be integers")
        if cursor < 1 or not 1 <= limit <= MAX_PAYLOADS_PER_PAGE:
            return _error(422, "INVALID_REQUEST_UNKNOWN", "cursor >= 1, 1 <= limit <= 50")
        page = webhook.payloads[cursor - 1 : cursor - 1 + limit]
        next_cursor = cursor + len(page)
        # Reading payloads keeps an active webhook alive, as at Airtable.
        webhook.expiration_time = datetime.now(UTC) + WEBHOOK_LIFETIME
        return JSONResponse(
            {
                "cursor": next_cursor,
                "mightHaveMore": next_cursor <= len(webhook.payloads),
                "payloads": page,
            }
        )

    async def _change(self, request: Request) -> Response:
        """Not Airtable: a change made "in the UI" (source `client`), for `sluice simulate`."""
        base = self._gate(request)
        body = await request.json()
        table = request.path_params["table"]
        action = body.get("action", "create")
        try:
            if action == "create":
                record_id = self.create_records(base.id, table, [body.get("fields", {})])[0]
            elif action == "update":
                record_id = body["recordId"]
                self.update_records(base.id, table, {record_id: body.get("fields", {})})
            elif action == "destroy":
                record_id = body["recordId"]
                self.destroy_records(base.id, table, [record_id])
            else:
                return _error(422, "INVALID_REQUEST_UNKNOWN", "action: create|update|destroy")
        except KeyError as exc:
            return _error(404, "NOT_FOUND", f"unknown table, field or record {exc}")
        return JSONResponse({"id": record_id, "baseTransactionNumber": base.transaction_number})

    def _table(self, base: FakeBase, request: Request) -> FakeTable | None:
        try:
            return base.table(request.path_params["table"])
        except KeyError:
            return None

    async def _list_records(self, request: Request) -> Response:
        base = self._gate(request)
        table = self._table(base, request)
        if table is None:
            return _error(404, "TABLE_NOT_FOUND", "Could not find table")
        options: dict[str, Any] = dict(request.query_params)
        if "fields[]" in request.query_params:
            options["fields"] = request.query_params.getlist("fields[]")
            del options["fields[]"]
        if request.method == "POST":
            options.update(await request.json())
        self.listings.append(options)
        by_id = str(options.get("returnFieldsByFieldId", "0")).lower() in ("1", "true")
        size = min(int(options.get("pageSize", MAX_PAGE_SIZE)), MAX_PAGE_SIZE)
        start = int(options.get("offset", 0) or 0)
        try:
            only = {table.field(f).id for f in options["fields"]} if "fields" in options else None
        except KeyError as exc:
            return _error(422, "UNKNOWN_FIELD_NAME", f"Unknown field name: {exc}")
        rows = list(table.records.values())
        if formula := options.get("filterByFormula"):
            cutoff = _modified_after(formula)
            if cutoff is None:
                return _error(
                    422,
                    "INVALID_FILTER_BY_FORMULA",
                    f"The formula for filtering records is invalid: {formula}",
                )
            rows = [r for r in rows if r.modified_time is not None and r.modified_time > cutoff]
        page = [table.record_json(r, by_id=by_id, only=only) for r in rows[start : start + size]]
        answer: dict[str, Any] = {"records": page}
        if start + size < len(rows):
            answer["offset"] = str(start + size)
        return JSONResponse(answer)

    async def _get_record(self, request: Request) -> Response:
        base = self._gate(request)
        table = self._table(base, request)
        record = table.records.get(request.path_params["record_id"]) if table else None
        if table is None or record is None:
            return _error(404, "NOT_FOUND", "Could not find what you are looking for")
        by_id = request.query_params.get("returnFieldsByFieldId") in ("1", "true")
        return JSONResponse(table.record_json(record, by_id=by_id))

    async def _create_records(self, request: Request) -> Response:
        base = self._gate(request)
        table = self._table(base, request)
        if table is None:
            return _error(404, "TABLE_NOT_FOUND", "Could not find table")
        body = await request.json()
        single = "records" not in body
        rows = [body] if single else body["records"]
        if len(rows) > MAX_RECORDS_PER_WRITE:
            return _error(422, "INVALID_RECORDS", "at most 10 records per request")
        try:
            ids = self.create_records(
                base.id, table.id, [r.get("fields", {}) for r in rows], source="publicApi"
            )
        except KeyError as exc:
            return _error(422, "UNKNOWN_FIELD_NAME", f"Unknown field name: {exc}")
        by_id = bool(body.get("returnFieldsByFieldId"))
        made = [table.record_json(table.records[i], by_id=by_id) for i in ids]
        return JSONResponse(made[0] if single else {"records": made})

    async def _update_records(self, request: Request) -> Response:
        base = self._gate(request)
        table = self._table(base, request)
        if table is None:
            return _error(404, "TABLE_NOT_FOUND", "Could not find table")
        body = await request.json()
        return self._apply_updates(base, table, body.get("records", []), body)

    async def _update_record(self, request: Request) -> Response:
        base = self._gate(request)
        table = self._table(base, request)
        if table is None:
            return _error(404, "TABLE_NOT_FOUND", "Could not find table")
        body = await request.json()
        row = {"id": request.path_params["record_id"], "fields": body.get("fields", {})}
        answer = self._apply_updates(base, table, [row], body)
        if answer.status_code != 200:
            return answer
        return JSONResponse(table.record_json(table.records[row["id"]], by_id=_by_id(body)))

    def _apply_updates(
        self, base: FakeBase, table: FakeTable, rows: list[dict[str, Any]], body: dict[str, Any]
    ) -> Response:
        if len(rows) > MAX_RECORDS_PER_WRITE:
            return _error(422, "INVALID_RECORDS", "at most 10 records per request")
        if any(row.get("id") not in table.records for row in rows):
            return _error(404, "NOT_FOUND", "Could not find a record")
        try:
            for row in rows:
                for key in row.get("fields", {}):
                    table.field(key)
        except KeyError as exc:
            return _error(422, "UNKNOWN_FIELD_NAME", f"Unknown field name: {exc}")
        # Changes through the Web API come back in payloads as `publicApi`.
        self.update_records(
            base.id,
            table.id,
            {row["id"]: row.get("fields", {}) for row in rows},
            source="publicApi",
        )
        return JSONResponse(
            {
                "records": [
                    table.record_json(table.records[r["id"]], by_id=_by_id(body)) for r in rows
                ]
            }
        )

    async def _delete_records(self, request: Request) -> Response:
        base = self._gate(request)
        table = self._table(base, request)
        if table is None:
            return _error(404, "TABLE_NOT_FOUND", "Could not find table")
        ids = request.query_params.getlist("records[]")
        if len(ids) > MAX_RECORDS_PER_WRITE:
            return _error(422, "INVALID_RECORDS", "at most 10 records per request")
        if any(i not in table.records for i in ids):
            return _error(404, "NOT_FOUND", "Could not find a record")
        self.destroy_records(base.id, table.id, ids, source="publicApi")
        return JSONResponse({"records": [{"id": i, "deleted": True} for i in ids]})

    async def _delete_record(self, request: Request) -> Response:
        base = self._gate(request)
        table = self._table(base, request)
        record_id = request.path_params["record_id"]
        if table is None or record_id not in table.records:
            return _error(404, "NOT_FOUND", "Could not find a record")
        self.destroy_records(base.id, table.id, [record_id], source="publicApi")
        return JSONResponse({"id": record_id, "deleted": True})


def _by_id(body: dict[str, Any]) -> bool:
    return bool(body.get("returnFieldsByFieldId"))


def _modified_after(formula: str) -> datetime | None:
    """The cut-off of the one formula shape the fake evaluates; None for any other formula."""
    match = _MODIFIED_AFTER.fullmatch(formula.strip())
    if match is None:
        return None
    try:
        cutoff = datetime.fromisoformat(match.group(1))
    except ValueError:
        return None
    return cutoff if cutoff.tzinfo is not None else cutoff.replace(tzinfo=UTC)


def _split(changes: list[_Change], parts: int) -> list[list[_Change]]:
    """One action's changes over `parts` payloads: each record's cells dealt out in turn."""
    if parts <= 1:
        return [changes]
    split: list[list[_Change]] = [[] for _ in range(parts)]
    for change in changes:
        cells = list(change.changed.items())
        for i in range(parts):
            share = dict(cells[i::parts])
            if share or (i == 0 and not cells):
                previous = {k: v for k, v in change.previous.items() if k in share}
                split[i].append(_Change(change.table, change.record, change.kind, share, previous))
    return [part for part in split if part]


def _describe(entry: dict[str, Any], change: _Change, *, include_previous: bool) -> None:
    table, record = change.table, change.record

    def cells(values: dict[str, Any]) -> dict[str, Any]:
        return {fid: table.field(fid).payload_value(v) for fid, v in values.items()}

    if change.kind == "add":
        entry.setdefault("createdRecordsById", {})[record.id] = {
            "createdTime": _ts(record.created_time),
            "cellValuesByFieldId": cells(change.changed),
        }
    elif change.kind == "update":
        described: dict[str, Any] = {"current": {"cellValuesByFieldId": cells(change.changed)}}
        if include_previous:
            described["previous"] = {"cellValuesByFieldId": cells(change.previous)}
        entry.setdefault("changedRecordsById", {})[record.id] = described
    else:
        entry.setdefault("destroyedRecordIds", []).append(record.id)


LEADS_TABLE = "Leads"
LEADS_FIELDS: list[tuple[str, str] | tuple[str, str, dict[str, Any]]] = [
    ("Full Name", "singleLineText"),
    ("First Name", "singleLineText"),
    ("Last Name", "singleLineText"),
    ("Email", "email"),
    ("Phone", "phoneNumber"),
    ("Company", "singleLineText"),
    ("Job Title", "singleLineText"),
    ("City", "singleLineText"),
    ("State", "singleLineText"),
    ("Lead Source", "singleLineText"),
    ("Campaign", "singleLineText"),
    (
        "Lead Status",
        "singleSelect",
        {
            "choices": [
                {"id": "selNew00000000001", "name": "New", "color": "blueLight2"},
                {"id": "selContacted00001", "name": "Contacted", "color": "yellowLight2"},
                {"id": "selQualified00001", "name": "Qualified", "color": "greenLight2"},
                {"id": "selLost0000000001", "name": "Lost", "color": "redLight2"},
            ]
        },
    ),
    ("SMS Sequence Step", "number", {"precision": 0}),
    ("SMS Sent Count", "number", {"precision": 0}),
    ("Last SMS Sent At", "dateTime"),
    ("Opted Out", "checkbox", {"icon": "check", "color": "greenBright"}),
    ("Claimed By", "singleLineText"),
    ("Claimed At", "dateTime"),
    ("Notes", "multilineText"),
]


def add_leads_table(fake: FakeAirtable, base_id: str) -> FakeTable:
    """The leads table the default mapping expects, as a sales team would have it."""
    fields: list[tuple[str, str] | tuple[str, str, dict[str, Any]]] = []
    for spec in LEADS_FIELDS:
        if spec[1] == "dateTime":
            options = {
                "dateFormat": {"name": "iso", "format": "YYYY-MM-DD"},
                "timeFormat": {"name": "24hour", "format": "HH:mm"},
                "timeZone": "utc",
            }
            fields.append((spec[0], spec[1], options))
        else:
            fields.append(spec)
    return fake.add_table(base_id, LEADS_TABLE, fields)
