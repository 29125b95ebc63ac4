"""Talking to Airtable through pyairtable: a per-base rate limit, and errors that say what to do.

pyairtable is synchronous (requests); callers run these methods in a worker thread. Its own
retry on 429 (a few quick retries) is switched off: Airtable asks for 30 s after a 429, and the
caller decides where to wait (outside any database transaction).

The limit is kept per base and per process, on the time each request *finished*: then no more
than `per_second` requests of one base are ever in Airtable's hands within one second, whatever
the network delays. The same session counts every request it sends (providers/counting.py).

What Airtable answered becomes one of our errors here: unavailable (5xx, timeouts, connection
failures, and 429: transient) or a refused request (any other 4xx: invalid). `breaker()` makes the
circuit breaker the write-back and the reconciler call Airtable through.
"""

from __future__ import annotations

import re
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import requests
from pyairtable import Api
from pyairtable.formulas import IS_AFTER, LAST_MODIFIED_TIME, to_formula_str
from pyairtable.models.webhook import CreateWebhookResponse, Webhook, WebhookPayloads

from providers.counting import RequestCounter
from sluice.errors import InvalidInputError, TransientError
from sluice.resilience import CircuitBreaker

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from datetime import datetime

    from pyairtable.models.schema import BaseSchema

    from sluice.resilience import StateHook
    from sluice.settings import Settings

T = TypeVar("T")

# /v0/bases/{id}/..., /v0/meta/bases/{id}/..., /v0/{id}/{table}...
_BASE_IN_PATH = re.compile(r"/v0/(?:meta/)?(?:bases/)?(app[A-Za-z0-9]+)")
# Requests within this much of a one-second window are counted in it, against clock jitter.
_WINDOW_SECONDS = 1.0


class AirtableError(Exception):
    """A failed Airtable call."""


class AirtableUnavailableError(AirtableError, TransientError):
    """5xx, timeout or connection failure: transient, retry with backoff."""


class AirtableRateLimitedError(AirtableUnavailableError):
    """429: Airtable asks for a pause before the next request to this base."""

    def __init__(self, base_id: str | None, wait_seconds: float) -> None:
        super().__init__(f"rate limited on {base_id}; wait {wait_seconds:g} s")
        self.base_id = base_id
        self.wait_seconds = wait_seconds


class AirtableRequestError(AirtableError, InvalidInputError):
    """A 4xx other than 429: retrying the same request will not help."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"Airtable answered {status}: {detail}")
        self.status = status


def breaker_counts(exc: Exception) -> bool:
    """Outages count against Airtable; a 429 (slow down) and a 4xx (one bad record) do not."""
    return isinstance(exc, AirtableUnavailableError) and not isinstance(
        exc, AirtableRateLimitedError
    )


def breaker(settings: Settings, *, on_change: StateHook | None = None) -> CircuitBreaker:
    """The circuit breaker of Airtable calls (AIRTABLE_BREAKER_THRESHOLD, ..._RESET_SECONDS)."""
    return CircuitBreaker(
        "airtable",
        threshold=settings.airtable_breaker_threshold,
        reset_seconds=settings.airtable_breaker_reset_seconds,
        counts=breaker_counts,
        on_change=on_change,
    )


@dataclass(frozen=True, slots=True)
class RecordPage:
    """One page of List records: `{"id", "createdTime", "fields"}` each, fields by field id."""

    records: list[dict[str, Any]]
    offset: str | None  # where the next page starts; None after the last one


def modified_after(cutoff: datetime) -> str:
    """`filterByFormula` for records a user changed after `cutoff` (an aware datetime):
    `IS_AFTER(LAST_MODIFIED_TIME(), DATETIME_PARSE('<ISO 8601, UTC>'))`."""
    return to_formula_str(IS_AFTER(LAST_MODIFIED_TIME(), cutoff))


class BaseRateLimiter:
    """At most `per_second` requests per base in any second; none for `pause` after a 429."""

    def __init__(self, per_second: int, pause_after_429: float) -> None:
        self.per_second = per_second
        self.pause_after_429 = pause_after_429
        self._lock = threading.Lock()
        self._finished: dict[str, deque[float]] = {}
        self._blocked_until: dict[str, float] = {}
        self._in_flight: dict[str, int] = {}

    def delay(self, base_id: str) -> float:
        """Seconds until a request to `base_id` may start (0 if now)."""
        with self._lock:
            return self._delay(base_id, time.monotonic())

    def _delay(self, base_id: str, now: float) -> float:
        wait = self._blocked_until.get(base_id, 0.0) - now
        finished = self._finished.setdefault(base_id, deque())
        while finished and now - finished[0] >= _WINDOW_SECONDS:
            finished.popleft()
        if len(finished) + self._in_flight.get(base_id, 0) >= self.per_second:
            if not finished:
                return max(wait, 0.01)  # all slots are in flight: check again shortly
            wait = max(wait, finished[0] + _WINDOW_SECONDS - now)
        return max(wait, 0.0)

    def acquire(self, base_id: str) -> None:
        while True:
            with self._lock:
                wait = self._delay(base_id, time.monotonic())
                if wait <= 0:
                    self._in_flight[base_id] = self._in_flight.get(base_id, 0) + 1
                    return
            time.sleep(wait)

    def release(self, base_id: str, *, rate_limited: bool) -> None:
        with self._lock:
            now = time.monotonic()
            self._in_flight[base_id] -= 1
            self._finished.setdefault(base_id, deque()).append(now)
            if rate_limited:
                self._blocked_until[base_id] = now + self.pause_after_429


class RateLimitedSession(requests.Session):
    """A requests session that takes a slot from the limiter for each request to a base, and
    counts every request it sends."""

    def __init__(self, limiter: BaseRateLimiter) -> None:
        super().__init__()
        self.limiter = limiter
        self.sent = RequestCounter()

    def request(self, method: str, url: str | bytes, *args: Any, **kwargs: Any) -> Any:  # noqa: ANN401 - requests' own signature
        match = _BASE_IN_PATH.search(str(url))
        if match is None:
            self.sent.add()
            return super().request(method, url, *args, **kwargs)
        base_id = match.group(1)
        self.limiter.acquire(base_id)
        self.sent.add()
        rate_limited = False
        try:
            response = super().request(method, url, *args, **kwargs)
            rate_limited = response.status_code == 429
            return response
        finally:
            self.limiter.release(base_id, rate_limited=rate_limited)


def _base_of(exc: requests.HTTPError) -> str | None:
    url = exc.response.url if exc.response is not None else ""
    match = _BASE_IN_PATH.search(url or "")
    return match.group(1) if match else None


class AirtableClient:
    """The few Airtable calls sluice makes. Blocking: run them with `asyncio.to_thread`."""

    def __init__(
        self,
        token: str,
        *,
        endpoint_url: str,
        limiter: BaseRateLimiter,
        timeout: tuple[int, int] = (5, 30),
    ) -> None:
        self.limiter = limiter
        self.api = Api(token, endpoint_url=endpoint_url, retry_strategy=None, timeout=timeout)
        self._session = RateLimitedSession(limiter)
        self.api.session = self._session
        self.api.api_key = token  # sets the Authorization header on the new session

    @property
    def requests_sent(self) -> int:
        """Requests this client has sent so far, every retry included."""
        return self._session.sent.sent

    @classmethod
    def from_settings(cls, settings: Settings) -> AirtableClient:
        limiter = BaseRateLimiter(
            settings.airtable_requests_per_second, settings.airtable_rate_limit_wait_seconds
        )
        return cls(
            settings.require_airtable_api_key(),
            endpoint_url=settings.airtable_endpoint,
            limiter=limiter,
        )

    def payload_page(
        self, base_id: str, webhook_id: str, cursor: int, *, limit: int = 50
    ) -> WebhookPayloads:
        """One page of payloads from `cursor` on; its `cursor` is where the next page starts."""
        url = self.api.build_url("bases", base_id, "webhooks", webhook_id, "payloads")
        page = self._call(lambda: self.api.get(url, params={"cursor": cursor, "limit": limit}))
        return WebhookPayloads.model_validate(page)

    def schema(self, base_id: str) -> BaseSchema:
        return self._call(lambda: self.api.base(base_id).schema(force=True))

    def create_webhook(
        self, base_id: str, notification_url: str, specification: dict[str, Any]
    ) -> CreateWebhookResponse:
        return self._call(
            lambda: self.api.base(base_id).add_webhook(notification_url, specification)
        )

    def webhooks(self, base_id: str) -> list[Webhook]:
        return self._call(lambda: self.api.base(base_id).webhooks())

    def refresh_webhook(self, base_id: str, webhook_id: str) -> str | None:
        """Extends the webhook's life by seven days; returns the new expiration time."""
        url = self.api.build_url("bases", base_id, "webhooks", webhook_id, "refresh")
        answer = self._call(lambda: self.api.post(url))
        return answer.get("expirationTime") if isinstance(answer, dict) else None

    def update_records(
        self, base_id: str, table_id: str, records: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """PATCH at most 10 records ({"id", "fields"}) in one request; only the fields sent."""
        if len(records) > 10:
            raise ValueError("Airtable takes at most 10 records per update")
        table = self.api.table(base_id, table_id)
        updated = self._call(lambda: table.batch_update(records))  # type: ignore[arg-type]
        return [dict(record) for record in updated]

    def record_page(  # noqa: PLR0913 - List records' options, by keyword
        self,
        base_id: str,
        table_id: str,
        *,
        offset: str | None = None,
        formula: str | None = None,
        fields: Sequence[str] = (),
        page_size: int = 100,
    ) -> RecordPage:
        """One page of the walk pyairtable's `Table.iterate` makes (the same request, GET or,
        for a long URL, POST listRecords), cells keyed by field id. One page per call, so a
        page that failed can be asked for again from its `offset`."""
        table = self.api.table(base_id, table_id)
        options: dict[str, Any] = {"page_size": page_size, "use_field_ids": True}
        if offset:
            options["offset"] = offset
        if formula:
            options["formula"] = formula
        if fields:
            options["fields"] = list(fields)
        answer = self._call(
            lambda: self.api.request(
                "get",
                table.urls.records,
                fallback=("post", table.urls.records_post),
                options=options,
            )
        )
        return RecordPage(
            [dict(record) for record in answer.get("records", [])], answer.get("offset") or None
        )

    def delete_webhook(self, base_id: str, webhook_id: str) -> None:
        url = self.api.build_url("bases", base_id, "webhooks", webhook_id)
        self._call(lambda: self.api.delete(url))

    def _call(self, call: Callable[[], T]) -> T:
        try:
            return call()
        except requests.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else 0
            if status == 429:
                raise AirtableRateLimitedError(_base_of(exc), self.limiter.pause_after_429) from exc
            if status >= 500 or status == 0:
                raise AirtableUnavailableError(str(exc)) from exc
            raise AirtableRequestError(status, str(exc.args[-1])) from exc
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise AirtableUnavailableError(str(exc)) from exc
