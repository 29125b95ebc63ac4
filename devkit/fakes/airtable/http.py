"""The fake Airtable Web API: a Starlette app that pyairtable talks to unchanged.

It serves the model (devkit/fakes/airtable/model.py) in Airtable's JSON: record
list/get/create/update/delete (at most 10 records per write), the base schema, webhook
create/list/refresh/delete/enableNotifications, and payload listing with cursors and
`mightHaveMore`.

Record listing pages 100 at a time with an `offset`, honours `returnFieldsByFieldId` and
`fields[]`, and of `filterByFormula` exactly the shape the reconciler sends,
`IS_AFTER(LAST_MODIFIED_TIME(), DATETIME_PARSE('<ISO 8601>'))`, against each record's last
modified time (set when it is created or a cell of it changes); any other formula gets Airtable's
422 `INVALID_FILTER_BY_FORMULA`. The options of every listing are kept in `listings`.

For tests it records each request's arrival time and can answer 429 or 5xx on demand (the fault
injection it shares with the fake Square, devkit/fakes/faults.py), and can enforce Airtable's 5
requests/s per base itself. `POST /_fake/bases/{base}/tables/{table}/changes` lets
`sluice simulate airtable` make a change as if a person had made it in Airtable's UI.
"""

from __future__ import annotations

import re
import time
from collections import deque
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from devkit.fakes.airtable.model import (
    API_USER_ID,
    PERSON_USER_ID,
    WEBHOOK_LIFETIME,
    AirtableModel,
    airtable_time,
)
from devkit.fakes.faults import Failure, FaultInjected, Faults, RecordedRequest

if TYPE_CHECKING:
    from starlette.requests import Request

    from devkit.fakes.airtable.model import FakeBase, FakeTable, FakeWebhook

MAX_RECORDS_PER_WRITE = 10
MAX_PAYLOADS_PER_PAGE = 50
MAX_WEBHOOKS_PER_BASE = 10
MAX_PAGE_SIZE = 100
# The one filterByFormula the fake understands (what recovery's sweep sends for a lookback).
_MODIFIED_AFTER = re.compile(r"IS_AFTER\(LAST_MODIFIED_TIME\(\), DATETIME_PARSE\('([^']+)'\)\)")


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


class FakeAirtable(AirtableModel, FaultInjected):
    def __init__(
        self,
        token: str = "patFAKEsluice.dev",  # noqa: S107 - the fake's own, public dev token
        *,
        rate_limit_per_base: int | None = None,
        user_id: str = API_USER_ID,
        person_user_id: str = PERSON_USER_ID,
    ) -> None:
        super().__init__(user_id=user_id, person_user_id=person_user_id)
        self.token = token
        self.rate_limit_per_base = rate_limit_per_base
        self.faults = Faults()
        self.listings: list[dict[str, Any]] = []  # each List records request's options
        self._recent: dict[str, deque[float]] = {}
        self.app = Starlette(
            routes=self._routes(), exception_handlers={_Refused: _refused_response}
        )

    def requests_for(self, base_id: str, path_contains: str = "") -> list[RecordedRequest]:
        return [r for r in self.requests if r.base_id == base_id and path_contains in r.path]

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
        refusal = self._refusal(request, base_id)
        self.faults.record(request, refusal.status if refusal else 200, base_id=base_id)
        if refusal is not None:
            raise _Refused(_refused(refusal))
        base = self.bases.get(base_id or "")
        if base is None:
            raise _Refused(JSONResponse({"error": "NOT_FOUND"}, status_code=404))
        return base

    def _refusal(self, request: Request, base_id: str | None) -> Failure | None:
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return Failure(401)
        injected = self.faults.failure_for(request)
        if injected is not None:
            return injected
        # A change "in the UI" (/_fake/...) is a person's, not an API client's: not rate limited.
        api_call = not request.url.path.startswith("/_fake/")
        if self.rate_limit_per_base is not None and base_id is not None and api_call:
            recent = self._recent.setdefault(base_id, deque())
            now = time.monotonic()
            while recent and now - recent[0] >= 1.0:
                recent.popleft()
            if len(recent) >= self.rate_limit_per_base:
                return Failure(429)
            recent.append(now)
        return None

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
                "expirationTime": airtable_time(webhook.expiration_time),
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
        return JSONResponse({"expirationTime": airtable_time(webhook.expiration_time)})

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


def _refused(failure: Failure) -> Response:
    """Airtable's answer to a request refused before any endpoint runs."""
    if failure.status == 401:
        response = _error(401, "AUTHENTICATION_REQUIRED", "Authentication required")
    elif failure.status == 429:
        message = "Rate limit exceeded. Please try again later"
        response = JSONResponse(
            {"errors": [{"error": "RATE_LIMIT_REACHED", "message": message}]}, status_code=429
        )
    elif failure.status >= 500:
        response = _error(failure.status, "SERVER_ERROR", "Try again. If the problem persists...")
    else:
        response = _error(failure.status, "INJECTED_FAILURE", "injected failure")
    if failure.retry_after is not None:
        response.headers["Retry-After"] = str(failure.retry_after)
    return response


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
