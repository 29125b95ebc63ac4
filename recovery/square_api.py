"""Reading Square for the reconciler, through the squareup SDK's client.

The SDK's client carries the token, the `Square-Version` header, the base URL and its retries of
408/409/429/5xx (twice by default, with backoff, honouring `Retry-After`). On top of it we keep
our own request rate (an httpx hook, so the SDK's retries are paced too), retry connection
failures (the SDK does not), and stop through a circuit breaker when Square keeps failing.

List responses are read as JSON rather than as SDK models: building the SDK's models costs about
1 ms per booking (measured: 10,000 bookings took longer to parse than to fetch), and the raw
objects are exactly what Square sent, which is what synthetic events must carry. The requests go
through the SDK's own HTTP client (`_client_wrapper.httpx_client`, the object every SDK method
calls), so retries and headers stay the SDK's.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from json import JSONDecodeError
from typing import TYPE_CHECKING, Any

import httpx
from square import AsyncSquare
from square.core.api_error import ApiError

from sluice.resilience import CircuitBreaker, RateLimiter, retry

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

    from square.core.request_options import RequestOptions

    from sluice.settings import Settings

# Square refuses ListBookings windows longer than 31 days.
MAX_WINDOW = timedelta(days=31)
PAGE_SIZE = 100
BULK_RETRIEVE_MAX = 100


def provider_unwell(exc: BaseException) -> bool:
    """Failures that say Square itself is in trouble (they count towards the breaker)."""
    if isinstance(exc, httpx.TransportError):
        return True
    if not isinstance(exc, ApiError):
        return False
    status = exc.status_code or 0
    return status in (408, 429) or status >= 500


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


def _rfc3339(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class CustomerLookup:
    found: dict[str, dict[str, Any]]
    not_found: set[str]
    failed: dict[str, str]  # id -> Square's error, for ids Square could not answer


class SquareReader:
    def __init__(
        self, client: AsyncSquare, breaker: CircuitBreaker, *, sdk_retries: int = 2
    ) -> None:
        self._client = client
        self._breaker = breaker
        # The SDK's own retries of 408/409/429/5xx (its default is 2).
        self._options: RequestOptions = {"max_retries": sdk_retries}
        self.calls = 0

    @classmethod
    @asynccontextmanager
    async def from_settings(
        cls, settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> AsyncIterator[SquareReader]:
        limiter = RateLimiter(settings.square_requests_per_second)

        async def pace(_request: httpx.Request) -> None:
            await limiter.acquire()

        async with httpx.AsyncClient(
            transport=transport, timeout=30.0, event_hooks={"request": [pace]}
        ) as http:
            client = AsyncSquare(
                token=settings.require_square_access_token(),
                base_url=settings.square_api_url.rstrip("/"),
                httpx_client=http,
            )
            breaker = CircuitBreaker(threshold=5, reset_seconds=30.0, counts=provider_unwell)
            yield cls(client, breaker)

    async def _call(self, attempt: Callable[[], Awaitable[Any]]) -> Any:  # noqa: ANN401 - SDK types vary
        async def once() -> Any:  # noqa: ANN401
            self.calls += 1
            return await retry(attempt, retry_on=(httpx.TransportError,), attempts=3)

        return await self._breaker.call(once)

    async def _json(
        self,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: Any = None,  # noqa: ANN401
    ) -> dict[str, Any]:
        """One request through the SDK's HTTP client; Square's JSON answer, or ApiError."""
        http = self._client._client_wrapper.httpx_client  # noqa: SLF001 - see the module docstring

        async def attempt() -> dict[str, Any]:
            response = await http.request(
                path,
                method="GET" if body is None else "POST",
                params=params,
                json=body,
                request_options=self._options,
            )
            try:
                answer = response.json()
            except JSONDecodeError:
                answer = response.text
            # Raised inside the call, so the breaker sees what the SDK's retries could not fix.
            if not 200 <= response.status_code < 300 or not isinstance(answer, dict):
                raise ApiError(
                    status_code=response.status_code, headers=dict(response.headers), body=answer
                )
            return answer

        result: dict[str, Any] = await self._call(attempt)
        return result

    async def merchant_id(self) -> str:
        answer = await self._json("v2/merchants/me")
        merchant = answer.get("merchant")
        if not isinstance(merchant, dict) or not merchant.get("id"):
            raise ApiError(
                status_code=200, headers={}, body="RetrieveMerchant returned no merchant"
            )
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
