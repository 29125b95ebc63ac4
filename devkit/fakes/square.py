"""A fake Square API: a Starlette app the squareup SDK talks to unchanged.

It keeps bookings and customers in memory and speaks Square's wire format: ListBookings
(`GET /v2/bookings` with `start_at_min`, `start_at_max`, `limit`, `cursor`, `location_id`,
`customer_id`; a window over 31 days is refused with 400), RetrieveBooking, RetrieveCustomer,
ListCustomers, BulkRetrieveCustomers and RetrieveMerchant. Lists answer `{"bookings": [...],
"cursor": "..."}` with the cursor left out on the last page; errors answer `{"errors":
[{"category", "code", "detail", "field"?}]}`. Updating a booking or customer bumps its `version`
and `updated_at`, as Square does.

For tests it records every request and can answer 429 or 5xx on demand (`fail_next`), through
the fault injection it shares with the fake Airtable (devkit/fakes/faults.py).
"""

from __future__ import annotations

import base64
import json
import secrets
import string
from bisect import bisect_left
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from devkit.fakes.faults import FaultInjected, Faults, RecordedRequest

if TYPE_CHECKING:
    from starlette.requests import Request

MAX_WINDOW = timedelta(days=31)
MAX_PAGE_SIZE = 100
MAX_BULK_RETRIEVE = 100
_ID_ALPHABET = string.ascii_uppercase + string.digits
_ERROR_KIND = {
    400: ("INVALID_REQUEST_ERROR", "BAD_REQUEST"),
    401: ("AUTHENTICATION_ERROR", "UNAUTHORIZED"),
    404: ("INVALID_REQUEST_ERROR", "NOT_FOUND"),
    429: ("RATE_LIMIT_ERROR", "RATE_LIMITED"),
    500: ("API_ERROR", "INTERNAL_SERVER_ERROR"),
    502: ("API_ERROR", "BAD_GATEWAY"),
    503: ("API_ERROR", "SERVICE_UNAVAILABLE"),
    504: ("API_ERROR", "GATEWAY_TIMEOUT"),
}


def square_id(length: int = 14) -> str:
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(length))


def square_time(value: datetime) -> str:
    """Square's RFC 3339 form: UTC with a `Z`."""
    return value.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _parse_time(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError("timestamp without a time zone")
    return parsed


def _error(status: int, detail: str, field_name: str | None = None) -> JSONResponse:
    category, code = _ERROR_KIND.get(status, ("API_ERROR", "INTERNAL_SERVER_ERROR"))
    error: dict[str, str] = {"category": category, "code": code, "detail": detail}
    if field_name is not None:
        error["field"] = field_name
    return JSONResponse({"errors": [error]}, status_code=status)


@dataclass
class FakeSquare(FaultInjected):
    token: str = "EAAAfake-sluice-dev"  # noqa: S105 - the fake's own, public dev token
    merchant_id: str = field(default_factory=lambda: "ML" + square_id(12))
    location_id: str = field(default_factory=lambda: "L" + square_id(12))
    bookings: dict[str, dict[str, Any]] = field(default_factory=dict)
    customers: dict[str, dict[str, Any]] = field(default_factory=dict)
    faults: Faults = field(default_factory=Faults)
    _sorted: list[dict[str, Any]] | None = None
    _starts: list[datetime] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.app = Starlette(routes=self._routes())

    # ---- data, from Python (tests, benchmarks, dev) ----

    def add_customer(
        self,
        *,
        given_name: str = "Ada",
        family_name: str = "Lovelace",
        email_address: str | None = "ada@example.com",
        phone_number: str | None = "+15555550100",
        customer_id: str | None = None,
    ) -> dict[str, Any]:
        now = square_time(datetime.now(UTC))
        customer: dict[str, Any] = {
            "id": customer_id or square_id(26),
            "created_at": now,
            "updated_at": now,
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
        return customer

    def add_booking(
        self,
        start_at: datetime,
        *,
        customer_id: str | None = None,
        status: str = "ACCEPTED",
        duration_minutes: int = 60,
        booking_id: str | None = None,
    ) -> dict[str, Any]:
        now = square_time(datetime.now(UTC))
        booking: dict[str, Any] = {
            "id": booking_id or square_id(14).lower(),
            "version": 0,
            "status": status,
            "created_at": now,
            "updated_at": now,
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
        return booking

    def update_booking(self, booking_id: str, **changes: Any) -> dict[str, Any]:  # noqa: ANN401
        """Change fields of a booking the way Square does: a new version, a new `updated_at`."""
        booking = self.bookings[booking_id]
        if "start_at" in changes and isinstance(changes["start_at"], datetime):
            changes["start_at"] = square_time(changes["start_at"])
        booking.update(changes)
        booking["version"] += 1
        booking["updated_at"] = square_time(datetime.now(UTC))
        self._sorted = None
        return booking

    def update_customer(self, customer_id: str, **changes: Any) -> dict[str, Any]:  # noqa: ANN401
        customer = self.customers[customer_id]
        customer.update(changes)
        customer["version"] += 1
        customer["updated_at"] = square_time(datetime.now(UTC))
        return customer

    def requests_to(self, path_prefix: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.startswith(path_prefix)]

    # ---- the HTTP API ----

    def _routes(self) -> list[Route]:
        return [
            Route("/v2/bookings", self._list_bookings, methods=["GET"]),
            Route("/v2/bookings/{booking_id}", self._retrieve_booking, methods=["GET"]),
            Route("/v2/customers", self._list_customers, methods=["GET"]),
            Route("/v2/customers/bulk-retrieve", self._bulk_retrieve, methods=["POST"]),
            Route("/v2/customers/{customer_id}", self._retrieve_customer, methods=["GET"]),
            Route("/v2/merchants/{merchant_id}", self._retrieve_merchant, methods=["GET"]),
        ]

    def _gate(self, request: Request) -> JSONResponse | None:
        """Authentication and injected failures, before any endpoint runs."""
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return _error(401, "This request could not be authorized.")
        failure = self.faults.failure_for(request)
        if failure is None:
            return None
        response = _error(failure.status, "injected failure")
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
            start_min = _parse_time(q["start_at_min"]) if "start_at_min" in q else datetime.now(UTC)
            start_max = (
                _parse_time(q["start_at_max"]) if "start_at_max" in q else start_min + MAX_WINDOW
            )
        except ValueError:
            return _error(400, "start_at_min and start_at_max must be RFC 3339 timestamps")
        if start_max - start_min > MAX_WINDOW:
            return _error(
                400,
                "The time range between start_at_min and start_at_max must be at most 31 days.",
                "start_at_max",
            )
        limit = _limit(q.get("limit"))
        if limit is None:
            return _error(400, "limit must be a positive integer", "limit")
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
            return _error(400, "The cursor is invalid.", "cursor")
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
            return self._answer(request, _error(404, "Booking not found."))
        return self._answer(request, JSONResponse({"booking": booking}))

    async def _retrieve_customer(self, request: Request) -> JSONResponse:
        gate = self._gate(request)
        if gate is not None:
            return self._answer(request, gate)
        customer = self.customers.get(request.path_params["customer_id"])
        if customer is None:
            return self._answer(request, _error(404, "Customer not found."))
        return self._answer(request, JSONResponse({"customer": customer}))

    async def _list_customers(self, request: Request) -> JSONResponse:
        gate = self._gate(request)
        if gate is not None:
            return self._answer(request, gate)
        limit = _limit(request.query_params.get("limit"))
        offset = _decode_cursor(request.query_params.get("cursor"))
        if limit is None or offset is None:
            return self._answer(request, _error(400, "invalid limit or cursor"))
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
            return self._answer(request, _error(400, "customer_ids is required", "customer_ids"))
        if not isinstance(ids, list) or not 1 <= len(ids) <= MAX_BULK_RETRIEVE:
            return self._answer(
                request, _error(400, "customer_ids must hold 1 to 100 ids", "customer_ids")
            )
        responses: dict[str, Any] = {}
        for customer_id in ids:
            customer = self.customers.get(str(customer_id))
            if customer is None:
                category, code = _ERROR_KIND[404]
                responses[str(customer_id)] = {
                    "errors": [{"category": category, "code": code, "detail": "Not found"}]
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
            return self._answer(request, _error(404, "Merchant not found."))
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

    def _by_start(self) -> tuple[list[datetime], list[dict[str, Any]]]:
        """Bookings by start time, and their start times, for bisecting a window."""
        if self._sorted is None:
            self._sorted = sorted(self.bookings.values(), key=lambda b: (b["start_at"], b["id"]))
            self._starts = [_parse_time(b["start_at"]) for b in self._sorted]
        return self._starts, self._sorted


def _limit(raw: str | None) -> int | None:
    if raw is None:
        return MAX_PAGE_SIZE
    if not raw.isdigit() or int(raw) < 1:
        return None
    return min(int(raw), MAX_PAGE_SIZE)


def _encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"o": offset}).encode()).decode()


def _decode_cursor(cursor: str | None) -> int | None:
    if not cursor:
        return 0
    try:
        offset = json.loads(base64.urlsafe_b64decode(cursor.encode()))["o"]
    except (ValueError, KeyError, TypeError):
        return None
    return offset if isinstance(offset, int) and offset >= 0 else None
