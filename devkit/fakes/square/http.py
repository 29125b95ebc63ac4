"""The fake Square: its data, its event log, and the Starlette app serving them in Square's wire
format (the package docstring lists what it speaks). The searches live beside it:
SearchEvents in `event_search`, SearchCustomers in `customer_search`, the shared wire
vocabulary (errors, times, cursors) in `wire`.
"""

from __future__ import annotations

import copy
import json
from bisect import bisect_left
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from devkit.fakes.faults import FaultInjected, Faults, RecordedRequest
from devkit.fakes.square.customer_search import search_customers
from devkit.fakes.square.event_search import LoggedEvent, search_events
from devkit.fakes.square.posted_event import parse_posted_event
from devkit.fakes.square.wire import (
    MAX_PAGE_SIZE,
    SquareBadRequest,
    decode_cursor,
    encode_cursor,
    error,
    json_object,
    parse_time,
    square_id,
    square_time,
)
from devkit.square_envelope import square_envelope
from schemas.square import EVENT_TYPES

if TYPE_CHECKING:
    from collections.abc import Callable

    from starlette.requests import Request

MAX_WINDOW = timedelta(days=31)
MAX_BULK_RETRIEVE = 100
# The Square API version the fake's "application" is pinned to: what SearchEvents reports as
# each event's `metadata.api_version`.
API_VERSION = "2026-09-16"


def _wall_clock() -> datetime:
    return datetime.now(UTC)


@dataclass
class FakeSquare(FaultInjected):
    token: str = "EAAAfake-sluice-dev"  # noqa: S105 - the fake's own, public dev token
    merchant_id: str = field(default_factory=lambda: "ML" + square_id(12))
    location_id: str = field(default_factory=lambda: "L" + square_id(12))
    bookings: dict[str, dict[str, Any]] = field(default_factory=dict)
    customers: dict[str, dict[str, Any]] = field(default_factory=dict)
    faults: Faults = field(default_factory=Faults)
    # "Now" for changes made without `at=` and for SearchEvents' 28-day horizon.
    clock: Callable[[], datetime] = _wall_clock
    # Square starts with event search disabled; events made while it is off are never found.
    search_enabled: bool = False
    api_version: str = API_VERSION
    _log: list[LoggedEvent] = field(default_factory=list)
    _sorted: list[dict[str, Any]] | None = None
    _starts: list[datetime] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.app = Starlette(routes=self._routes())

    # ---- data, from Python (tests, benchmarks, dev) ----
    # Each change appends its event; `at` dates the change and its event (default: `clock()`).

    def add_customer(
        self,
        *,
        given_name: str = "Ada",
        family_name: str = "Lovelace",
        email_address: str | None = "ada@example.com",
        phone_number: str | None = "+15555550100",
        customer_id: str | None = None,
        at: datetime | None = None,
    ) -> dict[str, Any]:
        moment = at or self.clock()
        customer: dict[str, Any] = {
            "id": customer_id or square_id(26),
            "created_at": square_time(moment),
            "updated_at": square_time(moment),
            "given_name": given_name,
            "family_name": family_name,
            "preferences": {"email_unsubscribed": False},
            "creation_source": "THIRD_PARTY",
            "version": 0,
        }
        if email_address is not None:
            customer["email_address"] = email_address
        if phone_number is not None:
            customer["phone_number"] = phone_number
        self.customers[customer["id"]] = customer
        self._record("customer.created", customer, moment)
        return customer

    def add_booking(
        self,
        start_at: datetime,
        *,
        customer_id: str | None = None,
        status: str = "ACCEPTED",
        duration_minutes: int = 60,
        booking_id: str | None = None,
        at: datetime | None = None,
    ) -> dict[str, Any]:
        moment = at or self.clock()
        booking: dict[str, Any] = {
            "id": booking_id or square_id(14).lower(),
            "version": 0,
            "status": status,
            "created_at": square_time(moment),
            "updated_at": square_time(moment),
            "start_at": square_time(start_at),
            "location_id": self.location_id,
            "customer_note": "",
            "seller_note": "",
            "all_day": False,
            "location_type": "BUSINESS_LOCATION",
            "source": "FIRST_PARTY_MERCHANT",
            "creator_details": {"creator_type": "TEAM_MEMBER", "team_member_id": "TMfakeStaff01"},
            "appointment_segments": [
                {
                    "duration_minutes": duration_minutes,
                    "service_variation_id": "SVfakeWash0001",
                    "service_variation_version": 1599775456731,
                    "team_member_id": "TMfakeStaff01",
                    "intermission_minutes": 0,
                    "any_team_member": False,
                }
            ],
            "transition_time_minutes": 0,
        }
        if customer_id is not None:
            booking["customer_id"] = customer_id
        self.bookings[booking["id"]] = booking
        self._sorted = None
        self._record("booking.created", booking, moment)
        return booking

    def update_booking(
        self,
        booking_id: str,
        *,
        at: datetime | None = None,
        **changes: Any,  # noqa: ANN401
    ) -> dict[str, Any]:
        """Change fields of a booking the way Square does: a new version, a new `updated_at`.
        A cancellation is an update too (`status="CANCELLED_BY_CUSTOMER"`), as on Square."""
        booking = self.bookings[booking_id]
        moment = at or self.clock()
        if "start_at" in changes and isinstance(changes["start_at"], datetime):
            changes["start_at"] = square_time(changes["start_at"])
        booking.update(changes)
        booking["version"] += 1
        booking["updated_at"] = square_time(moment)
        self._sorted = None
        self._record("booking.updated", booking, moment)
        return booking

    def update_customer(
        self,
        customer_id: str,
        *,
        at: datetime | None = None,
        **changes: Any,  # noqa: ANN401
    ) -> dict[str, Any]:
        customer = self.customers[customer_id]
        moment = at or self.clock()
        customer.update(changes)
        customer["version"] += 1
        customer["updated_at"] = square_time(moment)
        self._record("customer.updated", customer, moment)
        return customer

    def delete_customer(self, customer_id: str, *, at: datetime | None = None) -> dict[str, Any]:
        """Remove a customer; its `customer.deleted` event carries the profile as it last was."""
        customer = self.customers.pop(customer_id)
        self._record("customer.deleted", customer, at or self.clock())
        return customer

    # ---- the event log ----

    @property
    def events(self) -> list[dict[str, Any]]:
        """Every event the fake has made, oldest change first, each in the webhook envelope."""
        return [logged.body for logged in self._log]

    def latest_event(self, object_id: str | None = None) -> dict[str, Any]:
        """A copy of the newest event (about `object_id`, if given): the body a sender signs and
        delivers (devkit.simulate.signed_square_delivery)."""
        for logged in reversed(self._log):
            data = logged.body["data"]
            if object_id is None or data["object"][data["type"]]["id"] == object_id:
                return copy.deepcopy(logged.body)
        raise LookupError(f"no event about {object_id!r}" if object_id else "no events yet")

    def record_event(self, body: dict[str, Any]) -> dict[str, Any]:
        """Take a Square event made elsewhere (a webhook envelope, as devkit.simulate builds it)
        as having happened here: its object becomes the booking or customer as it now is (a
        `customer.deleted` removes it), and the event joins the log as it is, with its own
        `event_id` and `created_at`. Raises SquareBadRequest for a body that is not an event."""
        posted = parse_posted_event(body)
        obj = copy.deepcopy(posted.obj)
        if posted.entity == "booking":
            self.bookings[obj["id"]] = obj
            self._sorted = None
        elif posted.deleted:
            self.customers.pop(obj["id"], None)
        else:
            self.customers[obj["id"]] = obj
        self._append(copy.deepcopy(posted.body), posted.at)
        return obj

    def _record(self, event_type: str, obj: dict[str, Any], moment: datetime) -> None:
        body = square_envelope(
            event_type,
            obj,
            merchant_id=self.merchant_id,
            location_id=obj.get("location_id") if event_type.startswith("booking.") else None,
            created_at=moment,
        )
        self._append(body, moment)

    def _append(self, body: dict[str, Any], moment: datetime) -> None:
        """The one way into the log: searchable only if search is enabled as it is made."""
        self._log.append(LoggedEvent(body, moment, searchable=self.search_enabled))

    def requests_to(self, path_prefix: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.startswith(path_prefix)]

    # ---- the HTTP API ----

    def _routes(self) -> list[Route]:
        return [
            Route("/v2/bookings", self._list_bookings, methods=["GET"]),
            Route("/v2/bookings/{booking_id}", self._retrieve_booking, methods=["GET"]),
            Route("/v2/customers", self._list_customers, methods=["GET"]),
            Route("/v2/customers/bulk-retrieve", self._bulk_retrieve, methods=["POST"]),
            Route("/v2/customers/search", self._search_customers, methods=["POST"]),
            Route("/v2/customers/{customer_id}", self._retrieve_customer, methods=["GET"]),
            Route("/v2/merchants/{merchant_id}", self._retrieve_merchant, methods=["GET"]),
            Route("/v2/events", self._search_events, methods=["POST"]),
            Route("/v2/events/enable", self._enable_events, methods=["PUT"]),
            Route("/v2/events/disable", self._disable_events, methods=["PUT"]),
            Route("/v2/events/types", self._list_event_types, methods=["GET"]),
            # Development only, like the fake Airtable's `/_fake/`: no token, no faults.
            Route("/_fake/events", self._post_event, methods=["POST"]),
        ]

    def _gate(self, request: Request) -> JSONResponse | None:
        """Authentication and injected failures, before any endpoint runs."""
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return error(401, "This request could not be authorized.")
        failure = self.faults.failure_for(request)
        if failure is None:
            return None
        response = error(failure.status, "injected failure")
        if failure.retry_after is not None:
            response.headers["Retry-After"] = str(failure.retry_after)
        return response

    def _answer(self, request: Request, response: JSONResponse) -> JSONResponse:
        self.faults.record(request, response.status_code)
        return response

    async def _list_bookings(self, request: Request) -> JSONResponse:
        return self._answer(request, self._gate(request) or self._bookings_page(request))

    def _bookings_page(self, request: Request) -> JSONResponse:
        q = request.query_params
        try:
            start_min = parse_time(q["start_at_min"]) if "start_at_min" in q else self.clock()
            start_max = (
                parse_time(q["start_at_max"]) if "start_at_max" in q else start_min + MAX_WINDOW
            )
        except ValueError:
            return error(400, "start_at_min and start_at_max must be RFC 3339 timestamps")
        if start_max - start_min > MAX_WINDOW:
            return error(
                400,
                "The time range between start_at_min and start_at_max must be at most 31 days.",
                "start_at_max",
            )
        limit = _limit(q.get("limit"))
        if limit is None:
            return error(400, "limit must be a positive integer", "limit")
        starts, ordered = self._by_start()
        in_window = ordered[bisect_left(starts, start_min) : bisect_left(starts, start_max)]
        matching = [
            b
            for b in in_window
            if q.get("location_id") in (None, b["location_id"])
            and q.get("customer_id") in (None, b.get("customer_id"))
        ]
        offset = _decode_cursor(q.get("cursor"))
        if offset is None:
            return error(400, "The cursor is invalid.", "cursor")
        page = matching[offset : offset + limit]
        body: dict[str, Any] = {"bookings": page}
        if offset + limit < len(matching):
            body["cursor"] = _encode_cursor(offset + limit)
        return JSONResponse(body)

    async def _retrieve_booking(self, request: Request) -> JSONResponse:
        gate = self._gate(request)
        if gate is not None:
            return self._answer(request, gate)
        booking = self.bookings.get(request.path_params["booking_id"])
        if booking is None:
            return self._answer(request, error(404, "Booking not found."))
        return self._answer(request, JSONResponse({"booking": booking}))

    async def _retrieve_customer(self, request: Request) -> JSONResponse:
        gate = self._gate(request)
        if gate is not None:
            return self._answer(request, gate)
        customer = self.customers.get(request.path_params["customer_id"])
        if customer is None:
            return self._answer(request, error(404, "Customer not found."))
        return self._answer(request, JSONResponse({"customer": customer}))

    async def _list_customers(self, request: Request) -> JSONResponse:
        gate = self._gate(request)
        if gate is not None:
            return self._answer(request, gate)
        limit = _limit(request.query_params.get("limit"))
        offset = _decode_cursor(request.query_params.get("cursor"))
        if limit is None or offset is None:
            return self._answer(request, error(400, "invalid limit or cursor"))
        everyone = sorted(self.customers.values(), key=lambda c: (c["created_at"], c["id"]))
        body: dict[str, Any] = {"customers": everyone[offset : offset + limit]}
        if offset + limit < len(everyone):
            body["cursor"] = _encode_cursor(offset + limit)
        return self._answer(request, JSONResponse(body))

    async def _bulk_retrieve(self, request: Request) -> JSONResponse:
        gate = self._gate(request)
        if gate is not None:
            return self._answer(request, gate)
        try:
            ids = json.loads(await request.body())["customer_ids"]
        except (ValueError, KeyError, TypeError):
            return self._answer(request, error(400, "customer_ids is required", "customer_ids"))
        if not isinstance(ids, list) or not 1 <= len(ids) <= MAX_BULK_RETRIEVE:
            return self._answer(
                request, error(400, "customer_ids must hold 1 to 100 ids", "customer_ids")
            )
        responses: dict[str, Any] = {}
        for customer_id in ids:
            customer = self.customers.get(str(customer_id))
            if customer is None:
                responses[str(customer_id)] = {
                    "errors": [
                        {
                            "category": "INVALID_REQUEST_ERROR",
                            "code": "NOT_FOUND",
                            "detail": "Not found",
                        }
                    ]
                }
            else:
                responses[str(customer_id)] = {"customer": customer}
        return self._answer(request, JSONResponse({"responses": responses}))

    async def _retrieve_merchant(self, request: Request) -> JSONResponse:
        gate = self._gate(request)
        if gate is not None:
            return self._answer(request, gate)
        wanted = request.path_params["merchant_id"]
        if wanted not in ("me", self.merchant_id):
            return self._answer(request, error(404, "Merchant not found."))
        merchant = {
            "id": self.merchant_id,
            "business_name": "Sluice Car Wash",
            "country": "US",
            "language_code": "en-US",
            "currency": "USD",
            "status": "ACTIVE",
            "main_location_id": self.location_id,
        }
        return self._answer(request, JSONResponse({"merchant": merchant}))

    async def _search_customers(self, request: Request) -> JSONResponse:
        gate = self._gate(request)
        if gate is not None:
            return self._answer(request, gate)
        try:
            answer = search_customers(
                list(self.customers.values()), json_object(await request.body())
            )
        except SquareBadRequest as bad:
            return self._answer(request, bad.response())
        return self._answer(request, JSONResponse(answer))

    async def _search_events(self, request: Request) -> JSONResponse:
        gate = self._gate(request)
        if gate is not None:
            return self._answer(request, gate)
        try:
            answer = search_events(
                self._log,
                json_object(await request.body()),
                now=self.clock(),
                api_version=self.api_version,
            )
        except SquareBadRequest as bad:
            return self._answer(request, bad.response())
        return self._answer(request, JSONResponse(answer))

    async def _post_event(self, request: Request) -> JSONResponse:
        try:
            obj = self.record_event(json_object(await request.body()))
        except SquareBadRequest as bad:
            return bad.response()
        return JSONResponse({"recorded": True, "object": obj, "searchable": self.search_enabled})

    async def _enable_events(self, request: Request) -> JSONResponse:
        return self._switch_search(request, enabled=True)

    async def _disable_events(self, request: Request) -> JSONResponse:
        return self._switch_search(request, enabled=False)

    def _switch_search(self, request: Request, *, enabled: bool) -> JSONResponse:
        gate = self._gate(request)
        if gate is not None:
            return self._answer(request, gate)
        self.search_enabled = enabled
        return self._answer(request, JSONResponse({}))

    async def _list_event_types(self, request: Request) -> JSONResponse:
        gate = self._gate(request)
        if gate is not None:
            return self._answer(request, gate)
        types = list(EVENT_TYPES)  # the ones this fake makes
        metadata = [{"event_type": t, "release_status": "PUBLIC"} for t in types]
        return self._answer(request, JSONResponse({"event_types": types, "metadata": metadata}))

    def _by_start(self) -> tuple[list[datetime], list[dict[str, Any]]]:
        """Bookings by start time, and their start times, for bisecting a window."""
        if self._sorted is None:
            self._sorted = sorted(self.bookings.values(), key=lambda b: (b["start_at"], b["id"]))
            self._starts = [parse_time(b["start_at"]) for b in self._sorted]
        return self._starts, self._sorted


def _limit(raw: str | None) -> int | None:
    if raw is None:
        return MAX_PAGE_SIZE
    if not raw.isdigit() or int(raw) < 1:
        return None
    return min(int(raw), MAX_PAGE_SIZE)


def _encode_cursor(offset: int) -> str:
    return encode_cursor({"o": offset})


def _decode_cursor(cursor: str | None) -> int | None:
    if not cursor:
        return 0
    try:
        offset = decode_cursor(cursor).get("o")
    except SquareBadRequest:
        return None
    return offset if isinstance(offset, int) and offset >= 0 else None
