"""Reading Square for the reconciler, through the squareup SDK's client.

The SDK's client carries the token, the `Square-Version` header, the base URL and its retries of
408/409/429/5xx (twice by default, with backoff, honouring `Retry-After`). On top of it we keep
our own request rate (an httpx hook, so the SDK's retries are paced too, and counted: see
providers/counting.py), retry connection failures (the SDK does not) with the platform's retry
policy, and stop through a circuit breaker (SQUARE_BREAKER_THRESHOLD, SQUARE_BREAKER_RESET_SECONDS)
when Square keeps failing. What Square answered becomes one of our errors here: unavailable
(transient, counts against the breaker) or a refused request (invalid).

List responses are read as JSON rather than as SDK models: building the SDK's models costs about
1 ms per booking (measured: 10,000 bookings took longer to parse than to fetch), and the raw
objects are exactly what Square sent, which is what synthetic events must carry. The requests go
through the SDK's own HTTP client (`_client_wrapper.httpx_client`, the object every SDK method
calls), so retries and headers stay the SDK's.
"""

from __future__ import annotations

import json
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from json import JSONDecodeError
from typing import TYPE_CHECKING, Any

import httpx
from square import AsyncSquare

from providers.counting import RequestCounter
from sluice.errors import InvalidInputError, TransientError
from sluice.resilience import CircuitBreaker, ProviderCalls, RateLimiter, RetryPolicy

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

    from square.core.request_options import RequestOptions

    from sluice.resilience import StateHook
    from sluice.settings import Settings

# Square refuses ListBookings windows longer than 31 days.
MAX_WINDOW = timedelta(days=31)
PAGE_SIZE = 100
BULK_RETRIEVE_MAX = 100


class SquareError(Exception):
    """A failed Square call."""


class SquareUnavailableError(SquareError, TransientError):
    """Square is unwell: 408, 429 or 5xx left after the SDK's retries, or no answer at all."""

    def __init__(self, detail: str, status: int | None = None) -> None:
        super().__init__(detail)
        self.status = status


class SquareUnreachableError(SquareUnavailableError):
    """No answer at all (a connection failure, a timeout): the SDK does not retry these, we do."""


class SquareRequestError(SquareError, InvalidInputError):
    """Any other answer that is not a JSON object with a 2xx status: asking again cannot help."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"Square answered {status}: {detail}")
        self.status = status


def answer_error(status: int, body: object) -> SquareError:
    detail = body if isinstance(body, str) else json.dumps(body, separators=(",", ":"))
    detail = detail[:500]
    if status in (408, 429) or status >= 500:
        return SquareUnavailableError(f"Square answered {status}: {detail}", status)
    return SquareRequestError(status, detail)


# Our retries: of connection failures only, 3 tries in all; the SDK retries what Square answered.
RETRY = RetryPolicy(attempts=3, retry_on=SquareUnreachableError, wait_initial=0.5, wait_max=30.0)


def windows(
    start: datetime, end: datetime, size: timedelta = MAX_WINDOW
) -> list[tuple[datetime, datetime]]:
    """[start, end) cut into consecutive windows of at most `size`."""
    cuts: list[tuple[datetime, datetime]] = []
    low = start
    while low < end:
        high = min(low + size, end)
        cuts.append((low, high))
        low = high
    return cuts


def _rfc3339(value: datetime, timespec: str = "seconds") -> str:
    return value.astimezone(UTC).isoformat(timespec=timespec).replace("+00:00", "Z")


def _range(start: datetime, end: datetime) -> dict[str, str]:
    """A search's TimeRange to the millisecond: a range cut to whole seconds would leave out the
    events of the last part-second, which the watermark then passes."""
    return {"start_at": _rfc3339(start, "milliseconds"), "end_at": _rfc3339(end, "milliseconds")}


@dataclass(frozen=True, slots=True)
class CustomerLookup:
    found: dict[str, dict[str, Any]]
    not_found: set[str]
    failed: dict[str, str]  # id -> Square's error, for ids Square could not answer


class SquareReader:
    def __init__(
        self,
        client: AsyncSquare,
        calls: ProviderCalls,
        sent: RequestCounter,
        *,
        sdk_retries: int = 2,
    ) -> None:
        self._client = client
        self._calls = calls
        self._sent = sent
        # The SDK's own retries of 408/409/429/5xx (its default is 2).
        self._options: RequestOptions = {"max_retries": sdk_retries}

    @property
    def requests_sent(self) -> int:
        """Requests sent to Square so far, the SDK's retries and ours included."""
        return self._sent.sent

    @property
    def breaker(self) -> CircuitBreaker:
        return self._calls.breaker

    @classmethod
    @asynccontextmanager
    async def from_settings(
        cls,
        settings: Settings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        on_breaker_change: StateHook | None = None,
        sdk_retries: int = 2,
    ) -> AsyncIterator[SquareReader]:
        limiter = RateLimiter(settings.square_requests_per_second)
        sent = RequestCounter()

        async def pace(_request: httpx.Request) -> None:
            # Every request the SDK's client sends passes here, its retries included.
            await limiter.acquire()
            sent.add()

        async with httpx.AsyncClient(
            transport=transport, timeout=30.0, event_hooks={"request": [pace]}
        ) as http:
            client = AsyncSquare(
                token=settings.require_square_access_token(),
                base_url=settings.square_endpoint,
                httpx_client=http,
            )
            breaker = CircuitBreaker(
                "square",
                threshold=settings.square_breaker_threshold,
                reset_seconds=settings.square_breaker_reset_seconds,
                on_change=on_breaker_change,
            )
            yield cls(client, ProviderCalls(breaker, RETRY), sent, sdk_retries=sdk_retries)

    async def _json(
        self,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: Any = None,  # noqa: ANN401
        method: str | None = None,
    ) -> dict[str, Any]:
        """One request through the SDK's HTTP client; Square's JSON answer, or a SquareError."""
        http = self._client._client_wrapper.httpx_client  # noqa: SLF001 - see the module docstring

        async def attempt() -> dict[str, Any]:
            try:
                response = await http.request(
                    path,
                    method=method or ("GET" if body is None else "POST"),
                    params=params,
                    json=body,
                    request_options=self._options,
                )
            except httpx.TransportError as exc:
                raise SquareUnreachableError(f"{type(exc).__name__}: {exc}") from exc
            try:
                answer = response.json()
            except JSONDecodeError:
                answer = response.text
            # Raised inside the call, so the breaker sees what the SDK's retries could not fix.
            if not 200 <= response.status_code < 300 or not isinstance(answer, dict):
                raise answer_error(response.status_code, answer)
            return answer

        return await self._calls(attempt)

    async def merchant_id(self) -> str:
        answer = await self._json("v2/merchants/me")
        merchant = answer.get("merchant")
        if not isinstance(merchant, dict) or not merchant.get("id"):
            raise SquareRequestError(200, "RetrieveMerchant returned no merchant")
        return str(merchant["id"])

    async def booking_pages(
        self,
        start: datetime,
        end: datetime,
        *,
        location_id: str | None = None,
        page_size: int = PAGE_SIZE,
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """ListBookings: pages of bookings starting in [start, end), a window of <= 31 days."""
        if end - start > MAX_WINDOW:
            raise ValueError("a ListBookings window is at most 31 days")
        params: dict[str, Any] = {
            "start_at_min": _rfc3339(start),
            "start_at_max": _rfc3339(end),
            "limit": page_size,
        }
        if location_id is not None:
            params["location_id"] = location_id
        while True:
            answer = await self._json("v2/bookings", params=params)
            bookings: list[dict[str, Any]] = answer.get("bookings") or []
            if bookings:
                yield bookings
            cursor = answer.get("cursor")
            # Square leaves the cursor out on the last page.
            if not cursor or not bookings:
                return
            params = {**params, "cursor": cursor}

    async def customers(self, customer_ids: Sequence[str]) -> CustomerLookup:
        """BulkRetrieveCustomers, 100 ids per request."""
        found: dict[str, dict[str, Any]] = {}
        not_found: set[str] = set()
        failed: dict[str, str] = {}
        ids = list(dict.fromkeys(customer_ids))
        for first in range(0, len(ids), BULK_RETRIEVE_MAX):
            chunk = ids[first : first + BULK_RETRIEVE_MAX]
            answer = await self._json("v2/customers/bulk-retrieve", body={"customer_ids": chunk})
            answers: dict[str, Any] = answer.get("responses") or {}
            for customer_id in chunk:
                one = answers.get(customer_id)
                if isinstance(one, dict) and isinstance(one.get("customer"), dict):
                    found[customer_id] = one["customer"]
                    continue
                codes = [e.get("code") for e in (one or {}).get("errors") or []]
                if one is None or "NOT_FOUND" in codes:
                    not_found.add(customer_id)
                else:
                    failed[customer_id] = ", ".join(str(c) for c in codes) or "no customer"
        return CustomerLookup(found, not_found, failed)

    async def enable_event_search(self) -> None:
        """EnableEvents: make events searchable from now on (Square keeps them unsearchable until
        an application enables it, and events of a disabled period are never searchable)."""
        await self._json("v2/events/enable", method="PUT")

    async def event_pages(
        self,
        event_types: Sequence[str],
        start: datetime,
        end: datetime,
        *,
        page_size: int = PAGE_SIZE,
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """SearchEvents: pages of the events of `event_types` created in [start, end), oldest
        first. A cursor is valid only with its original query, so every page sends that query."""
        body: dict[str, Any] = {
            "limit": page_size,
            "query": {
                "filter": {
                    "event_types": list(event_types),
                    "created_at": _range(start, end),
                },
                "sort": {"field": "DEFAULT", "order": "ASC"},
            },
        }
        async for page in self._search_pages("v2/events", body, "events"):
            yield page

    async def customer_pages(
        self,
        updated_since: datetime | None,
        until: datetime,
        *,
        page_size: int = PAGE_SIZE,
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """SearchCustomers: pages of the customers updated in [updated_since, until), or of every
        customer when `updated_since` is None (a first sweep)."""
        query: dict[str, Any] = {"sort": {"field": "CREATED_AT", "order": "ASC"}}
        if updated_since is not None:
            query["filter"] = {"updated_at": _range(updated_since, until)}
        body = {"limit": page_size, "query": query}
        async for page in self._search_pages("v2/customers/search", body, "customers"):
            yield page

    async def _search_pages(
        self, path: str, body: dict[str, Any], key: str
    ) -> AsyncIterator[list[dict[str, Any]]]:
        while True:
            answer = await self._json(path, body=body)
            found: list[dict[str, Any]] = answer.get(key) or []
            if found:
                yield found
            cursor = answer.get("cursor")
            # Square leaves the cursor out (or empty) on the last page.
            if not cursor:
                return
            body = {**body, "cursor": cursor}
