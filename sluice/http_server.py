"""How every sluice HTTP server runs: uvicorn with httptools, plus limits on what a client can make
it hold before anyone has checked who the client is.

uvicorn's httptools protocol has no limit on the size or number of header fields (an unfinished
header is buffered for as long as it keeps coming), no header or body read timeout, a keep-alive
timer that starts only after a response and that any byte cancels, and no connection cap. Ingest
faces the internet, so `HttpLimitsProtocol` adds those, keeping httptools as the parser:

- head limits: the request line and header fields in total, each header field, the number of
  fields; past any of them 431, then the connection is closed (an unfinished head is refused as
  soon as the bytes received for it pass the total, so no more of it is buffered);
- deadlines per phase of a request, each measured from the start of that phase so that a trickle
  cannot extend it: idle (a fresh connection, or between requests), head (from its first byte),
  body (from the end of the head); 408 while no response has started, then close;
- a connection cap per process: past it, 503 with `Retry-After`, then close;
- a budget per process for the bodies of unfinished requests, all connections together: a body
  still unfinished after a read while they hold more than the budget gets 503 with
  `Retry-After`, then close. Without it, slow bodies a byte short of the body limit could hold
  the cap times that limit; a body that arrives whole in one read is never refused for it.

One timer per connection carries all the deadlines. A phase change only moves the deadline (a
float); the timer is re-armed only when the new deadline is earlier than the one it was armed for,
and when it fires early it re-arms for the rest. So a request costs no timer work in the usual
case, which matters on the ingest hot path.
"""

from __future__ import annotations

import functools
import http
import itertools
import math
import resource
from collections import Counter
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Literal, TypedDict, cast

import httptools
import structlog
import uvicorn
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

if TYPE_CHECKING:
    import asyncio
    from typing import Any

    from starlette.types import ASGIApp
    from uvicorn.config import Config
    from uvicorn.server import ServerState

    from sluice.settings import Settings

log = structlog.get_logger(__name__)

Refusal = Literal[
    "header_bytes",  # 431
    "header_field_bytes",  # 431
    "header_count",  # 431
    "header_timeout",  # 408
    "body_timeout",  # 408
    "connections",  # 503
    "pending_bodies",  # 503
    "malformed",  # 400: httptools could not parse the request
]

_STATUS: dict[Refusal, int] = {
    "header_bytes": 431,
    "header_field_bytes": 431,
    "header_count": 431,
    "header_timeout": 408,
    "body_timeout": 408,
    "connections": 503,
    "pending_bodies": 503,
    "malformed": 400,
}

# After an answer the connection stays open for a moment, reading and dropping what the client
# still sends: closing with unread data sends a TCP reset, and a client that is still writing its
# oversized request would then lose our answer. Bounded in time and bytes, as the client is hostile.
_LINGER_SECONDS = 2.0
_LINGER_BYTES = 1024 * 1024

# Files a server process needs besides its client connections: the listening socket, database and
# broker connections, log and metrics files.
_SPARE_FILES = 64


@dataclass(frozen=True, slots=True)
class HttpLimits:
    max_header_bytes: int
    max_header_field_bytes: int
    max_headers: int
    header_timeout_seconds: float
    body_timeout_seconds: float
    keepalive_seconds: float
    max_connections: int
    max_pending_body_bytes: int

    @classmethod
    def from_settings(cls, settings: Settings) -> HttpLimits:
        return cls(
            max_header_bytes=settings.http_max_header_bytes,
            max_header_field_bytes=settings.http_max_header_field_bytes,
            max_headers=settings.http_max_headers,
            header_timeout_seconds=settings.http_header_timeout_seconds,
            body_timeout_seconds=settings.http_body_timeout_seconds,
            keepalive_seconds=settings.http_keepalive_seconds,
            max_connections=settings.http_max_connections,
            max_pending_body_bytes=settings.http_max_pending_body_bytes,
        )


class RefusalLog:
    """Refusals by reason, logged as one warning line at most once a minute per process: a hostile
    client can open connections faster than anyone can read one line for each.
    """

    def __init__(self, every_seconds: float = 60.0) -> None:
        self._every = every_seconds
        self._counts: Counter[str] = Counter()
        self._flush: asyncio.TimerHandle | None = None

    def count(self, reason: Refusal, loop: asyncio.AbstractEventLoop) -> None:
        self._counts[reason] += 1
        if self._flush is None:  # the first refusal after a quiet minute is logged at once
            self._emit(loop)

    def _emit(self, loop: asyncio.AbstractEventLoop) -> None:
        if not self._counts:
            self._flush = None
            return
        log.warning("http.refused", window_seconds=self._every, **self._counts)
        self._counts.clear()
        self._flush = loop.call_later(self._every, self._emit, loop)


class Shared:
    """What the connections of one server process share: the refusal log, and the bytes of
    bodies received for requests not yet complete."""

    def __init__(self) -> None:
        self.refusals = RefusalLog()
        self.pending_body_bytes = 0


class _Phase(Enum):
    IDLE = "idle"  # no request begun: a fresh connection, or after a response (keep-alive)
    HEAD = "head"  # request line and header fields arriving
    BODY = "body"  # the head is complete, the body is not
    WAIT = "wait"  # the request is complete; the app is answering (no deadline of ours)
    LINGER = "linger"  # refused and answered: dropping input until the connection closes


# Looking up an Enum member costs about 0.2 µs on Python 3.11, a global name a tenth of that, and
# every request compares phases about a dozen times.
_IDLE, _HEAD, _BODY, _WAIT, _LINGER = _Phase


class _RefusedError(Exception):
    def __init__(self, reason: Refusal) -> None:
        self.reason = reason


class HttpLimitsProtocol(HttpToolsProtocol):
    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        limits: HttpLimits,
        shared: Shared,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._limits = limits
        self._shared = shared
        self._body_held = 0  # of the current request's body, counted in shared.pending_body_bytes
        self._phase = _IDLE
        self._deadline = 0.0  # loop time by which the current phase must end
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._head_received = 0  # bytes received since the head began (or dropped while lingering)
        self._over_cap = False

    def connection_made(  # type: ignore[override]  # uvicorn narrows the transport type too
        self, transport: asyncio.Transport
    ) -> None:
        super().connection_made(transport)
        # Past the cap the request is still read (with every limit), so the client gets a 503 it
        # can act on rather than a reset.
        self._over_cap = len(self.connections) > self._limits.max_connections
        self._expect(_IDLE, self._limits.keepalive_seconds)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._release_body()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def data_received(self, data: bytes) -> None:
        phase = self._phase
        if phase is _LINGER:
            self._head_received += len(data)
            if self._head_received > _LINGER_BYTES:
                self.transport.close()
            return
        if phase is _IDLE or phase is _WAIT:  # the first bytes of the next request
            self._head_received = 0
            self._expect(_HEAD, self._limits.header_timeout_seconds)
        if self._phase is _HEAD:
            self._head_received += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # Served as a plain request, as uvicorn does, but without its two warnings per such
            # request: nothing here speaks WebSocket, and anyone can send `Upgrade`.
            pass
        except httptools.HttpParserError as exc:
            refused = exc.__context__  # what a parser callback of ours raised, if it was that
            self._refuse(refused.reason if isinstance(refused, _RefusedError) else "malformed")
            return
        # Still in the head after all these bytes: the head is larger than the limit. (A read
        # that completed the head may also hold the body; on_headers_complete counted it then.)
        if self._phase is _HEAD and self._head_received > self._limits.max_header_bytes:
            self._refuse("header_bytes")
        # A body still unfinished after this read, while the unfinished bodies of the process
        # hold more than the budget. Checked only here: a request whose body ended within the
        # read (the usual delivery) holds nothing past it and is never refused for the budget.
        elif (
            self._phase is _BODY
            and self._shared.pending_body_bytes > self._limits.max_pending_body_bytes
        ):
            self._refuse("pending_bodies")

    def on_headers_complete(self) -> None:
        headers = self.headers
        limits = self._limits
        if len(headers) > limits.max_headers:
            raise _RefusedError("header_count")
        # A head that arrived in reads counted by data_received, which brought fewer bytes than
        # the field limit, can exceed neither size limit: the usual webhook, head and body in one
        # read. Counting the fields costs a few microseconds, as much as the rest of this class
        # does per request. (A head that began in the read that ended the request before it was
        # not counted: then the phase is no longer HEAD.)
        if self._phase is not _HEAD or self._head_received > limits.max_header_field_bytes:
            self._check_head_sizes()
        if self._over_cap:
            raise _RefusedError("connections")
        self._expect(_BODY, limits.body_timeout_seconds)
        super().on_headers_complete()

    def _check_head_sizes(self) -> None:
        # Names and values, plus ": " and CRLF per field, plus the request target.
        headers = self.headers
        size = len(self.url) + sum(map(len, itertools.chain.from_iterable(headers)))
        size += 4 * len(headers)
        if size > self._limits.max_header_bytes:
            raise _RefusedError("header_bytes")
        field_limit = self._limits.max_header_field_bytes
        if size > field_limit and any(len(n) + len(v) > field_limit for n, v in headers):
            raise _RefusedError("header_field_bytes")

    def on_body(self, body: bytes) -> None:
        # Counted while its request is unfinished, in uvicorn's buffer or the app's. What
        # follows an answer given already (a 413) is dropped by uvicorn: nothing is held.
        if not self.cycle.response_complete:
            self._body_held += len(body)
            self._shared.pending_body_bytes += len(body)
        super().on_body(body)

    def _release_body(self) -> None:
        self._shared.pending_body_bytes -= self._body_held
        self._body_held = 0

    def on_message_complete(self) -> None:
        self._release_body()
        super().on_message_complete()
        if self.cycle.response_complete:  # answered before the body ended (413, say)
            self._expect(_IDLE, self._limits.keepalive_seconds)
        else:
            self._phase = _WAIT

    def on_response_complete(self) -> None:
        # uvicorn's, except that our idle deadline replaces its keep-alive timer.
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
        elif self._phase is _WAIT:
            self._expect(_IDLE, self._limits.keepalive_seconds)

    def _expect(self, phase: _Phase, seconds: float) -> None:
        self._phase = phase
        deadline = self.loop.time() + seconds
        self._deadline = deadline
        if self._timer is None or deadline < self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self.loop.call_at(deadline, self._on_timer)
            self._timer_at = deadline

    def _on_timer(self) -> None:
        self._timer = None
        phase = self._phase
        if phase is _WAIT or self.transport.is_closing():
            return  # on_response_complete sets the next deadline
        if self._deadline > self.loop.time():  # the phase changed since: wait for the rest
            self._timer = self.loop.call_at(self._deadline, self._on_timer)
            self._timer_at = self._deadline
        elif phase is _HEAD:
            self._refuse("header_timeout")
        elif phase is _BODY:
            self._refuse("body_timeout")
        else:  # idle for the whole keep-alive time, or done lingering
            self.transport.close()

    def _refuse(self, reason: Refusal) -> None:
        self._shared.refusals.count(reason, self.loop)
        cycle = self.cycle
        if self._phase is _BODY:
            answerable = not cycle.response_started
            # The app's receive() now returns a disconnect, and what it sends is dropped.
            cycle.disconnected = True
            cycle.message_event.set()
        else:  # nothing of this request was handed to the app; an earlier answer may be pending
            answerable = cycle is None or cycle.response_complete
        self._release_body()
        # Drop what the parser holds of the refused head (httptools keeps unfinished fields);
        # from here on input is only counted and dropped.
        self.parser = None  # type: ignore[assignment]  # uvicorn does the same on connection_lost
        self.headers = []
        self.url = b""
        self._head_received = 0
        if not answerable or self.pipeline:
            self._phase = _LINGER
            self.transport.close()  # an answer now would be read as the answer to another request
            return
        self.transport.write(self._answer(reason))
        self.transport.write_eof()
        self.flow.resume_reading()
        self._expect(_LINGER, _LINGER_SECONDS)

    def _answer(self, reason: Refusal) -> bytes:
        status = _STATUS[reason]
        body = http.HTTPStatus(status).phrase.encode("ascii")
        lines = [STATUS_LINE[status]]
        lines.extend(b"%s: %s\r\n" % header for header in self.server_state.default_headers)
        if status == 503:
            # Idle connections are closed within the keep-alive time, and slow bodies give back
            # what they hold by the body deadline.
            wait = self._limits.keepalive_seconds
            if reason == "pending_bodies":
                wait = self._limits.body_timeout_seconds
            lines.append(b"retry-after: %d\r\n" % math.ceil(wait))
        lines.append(
            b"content-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n%s" % (len(body), body)
        )
        return b"".join(lines)


class UvicornOptions(TypedDict):
    http: type[asyncio.Protocol]
    loop: Literal["uvloop"]
    ws: Literal["none"]
    access_log: bool
    log_config: None
    proxy_headers: bool
    server_header: bool


def uvicorn_options(limits: HttpLimits) -> UvicornOptions:
    """What every sluice server passes to uvicorn, besides where to listen and the app."""
    # A partial of a class and plain values pickles, so it reaches the worker processes of
    # `--workers N`, and each worker gets a Shared of its own.
    protocol = functools.partial(HttpLimitsProtocol, limits=limits, shared=Shared())
    return UvicornOptions(
        http=cast("type[asyncio.Protocol]", protocol),  # uvicorn calls it as it would a class
        loop="uvloop",
        ws="none",  # no sluice app speaks WebSocket: an upgrade request is a plain request
        access_log=False,
        log_config=None,  # logging is ours (sluice.logging)
        # Nothing reads the client address, and a header per answer is work per request.
        proxy_headers=False,
        server_header=False,
    )


def run_http_server(  # noqa: PLR0913 - where to listen, workers and draining are the caller's
    app: ASGIApp | str,
    settings: Settings,
    *,
    host: str,
    port: int,
    graceful_shutdown_seconds: int | None,
    workers: int = 1,
) -> None:
    """Serve `app` until stopped. With `workers` above 1 `app` is an import string of a factory,
    called in each worker process.
    """
    limits = HttpLimits.from_settings(settings)
    raise_open_files_limit(limits.max_connections + _SPARE_FILES)  # worker processes inherit it
    uvicorn.run(
        app,
        host=host,
        port=port,
        workers=workers,
        factory=isinstance(app, str),
        timeout_graceful_shutdown=graceful_shutdown_seconds,
        **uvicorn_options(limits),
    )


def raise_open_files_limit(needed: int) -> None:
    """Raise the soft RLIMIT_NOFILE to the hard limit when it is below `needed`: without a file
    descriptor a connection is refused by accept() before we could answer it 503.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    # Linux refuses an unlimited soft limit for open files; ask for what is needed then.
    target = needed if hard == resource.RLIM_INFINITY else hard
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as exc:
        log.warning("http.open_files_limit", soft=soft, hard=hard, needed=needed, error=str(exc))
        return
    if target < needed:
        log.warning(
            "http.open_files_limit",
            soft=target,
            hard=hard,
            needed=needed,
            detail="the hard limit is below SLUICE_HTTP_MAX_CONNECTIONS plus spare files: "
            "connections past it are refused by the kernel, not answered 503",
        )
