"""What the fake provider APIs share for tests: failures answered on demand (`fail_next`), and a
record of every request with the status it got.

Each fake decides where in its own order of checks a planned failure applies and answers it in
its provider's error format; this keeps the plan and the record.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

    from starlette.requests import Request


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    at: float  # time.monotonic() when the fake took note of it, before it answered
    method: str
    path: str
    query: dict[str, str]
    status: int
    base_id: str | None = None  # the Airtable base a request is about


@dataclass(frozen=True, slots=True)
class Failure:
    """An injected answer: the status, and a `Retry-After` to send with it, if any."""

    status: int
    retry_after: int | None = None


@dataclass(slots=True)
class _Planned:
    failure: Failure
    remaining: int
    path_contains: str | None


@dataclass
class Faults:
    requests: list[RecordedRequest] = field(default_factory=list)
    # Called with each request before it is answered (tests use it to crash things).
    on_request: Callable[[RecordedRequest], None] | None = None
    _planned: list[_Planned] = field(default_factory=list)

    def fail_next(
        self,
        status: int,
        times: int = 1,
        *,
        path_contains: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        """Answer the next `times` requests whose path holds `path_contains` (any request when
        None) with `status` (429, 500, 503...) and, if given, a `Retry-After`."""
        self._planned.append(_Planned(Failure(status, retry_after), times, path_contains))

    def failure_for(self, request: Request) -> Failure | None:
        """The failure planned for this request, if any; each plan is used `times` times, the
        oldest first."""
        for planned in self._planned:
            wanted = planned.path_contains
            if planned.remaining > 0 and (wanted is None or wanted in request.url.path):
                planned.remaining -= 1
                return planned.failure
        return None

    def record(
        self, request: Request, status: int, *, base_id: str | None = None
    ) -> RecordedRequest:
        entry = RecordedRequest(
            time.monotonic(),
            request.method,
            request.url.path,
            dict(request.query_params),
            status,
            base_id,
        )
        self.requests.append(entry)
        if self.on_request is not None:
            self.on_request(entry)
        return entry


class FaultInjected:
    """What tests steer on every fake provider: planned failures, the requests seen, and a hook
    called with each (the fakes keep their `Faults` in `self.faults`)."""

    faults: Faults

    def fail_next(
        self,
        status: int,
        times: int = 1,
        *,
        path_contains: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        """Answer the next `times` matching requests with `status` (429, 500, 503...) and the
        provider's own error body."""
        self.faults.fail_next(status, times, path_contains=path_contains, retry_after=retry_after)

    @property
    def requests(self) -> list[RecordedRequest]:
        return self.faults.requests

    @property
    def on_request(self) -> Callable[[RecordedRequest], None] | None:
        """Called with each request before it is answered (tests use it to crash things)."""
        return self.faults.on_request

    @on_request.setter
    def on_request(self, hook: Callable[[RecordedRequest], None] | None) -> None:
        self.faults.on_request = hook
