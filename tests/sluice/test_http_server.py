"""What an unauthenticated client can make a sluice HTTP server hold: head sizes (431), head and
body deadlines (408), idle connections, and the connection cap (503), on real sockets against
the ingest app served as `sluice serve` serves it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import resource
import time
from typing import TYPE_CHECKING, Any

import psycopg
import pytest

from devkit.simulate import signed_square_delivery, square_event
from ingest.app import create_app
from sluice.http_server import HttpLimits, RefusalLog, raise_open_files_limit
from sluice.settings import Settings
from tests.support.raw_http import connection, parse_answer, read_answer, request, until_closed
from tests.support.services import running_server
from tests.support.square import SIGNATURE_KEY, WEBHOOK_URL

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterable
    from contextlib import AbstractAsyncContextManager

Conn = psycopg.Connection[tuple[Any, ...]]

# Short deadlines keep the tests quick; the code paths are the same as with the defaults.
DEADLINE = 1.0


@pytest.fixture
def serve(database_url: str) -> Callable[..., AbstractAsyncContextManager[str]]:
    """Start ingest with these SLUICE_HTTP_* settings (short deadlines unless given)."""

    @contextlib.asynccontextmanager
    async def start(**overrides: Any) -> AsyncIterator[str]:
        settings = Settings(
            DATABASE_URL=database_url,
            SQUARE_WEBHOOK_SIGNATURE_KEYS=SIGNATURE_KEY,
            SQUARE_WEBHOOK_URL=WEBHOOK_URL,
            **{
                "SLUICE_HTTP_HEADER_TIMEOUT_SECONDS": DEADLINE,
                "SLUICE_HTTP_BODY_TIMEOUT_SECONDS": DEADLINE,
                "SLUICE_HTTP_KEEPALIVE_SECONDS": DEADLINE,
                **overrides,
            },
        )
        async with running_server(create_app(settings), HttpLimits.from_settings(settings)) as url:
            yield url

    return start


@pytest.fixture
async def url(serve: Callable[..., AbstractAsyncContextManager[str]]) -> AsyncIterator[str]:
    async with serve() as started:
        yield started


async def refused(url: str, data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send `data`, read until the server closes; the status, headers and everything read."""
    async with connection(url) as (reader, writer):
        writer.write(data)
        await writer.drain()
        received, _ = await until_closed(reader, within=5)
    answer = parse_answer(received)
    return answer.status, answer.headers, received


def fields(count: int, size: int) -> dict[str, str]:
    """`count` header fields of `size` bytes each, counted as name + value + ': ' + CRLF."""
    return {f"x-f{i:04d}": "v" * (size - 11) for i in range(count)}


async def test_a_head_over_the_total_limit_is_431_and_closed(url: str) -> None:
    # 30 fields of 600 bytes: each well under the field limit, 18,000 bytes together.
    status, headers, received = await refused(url, request(headers=fields(30, 600)))
    assert status == 431
    assert headers["connection"] == "close"
    assert received.endswith(b"Request Header Fields Too Large")


async def test_a_head_just_under_the_total_limit_is_served(url: str) -> None:
    async with connection(url) as (reader, writer):
        writer.write(request(headers=fields(26, 600)))  # 15,600 bytes of fields
        assert (await read_answer(reader)).status == 200


async def test_one_header_field_over_its_limit_is_431(url: str) -> None:
    status, _, _ = await refused(url, request(headers={"x-big": "v" * 8200}))
    assert status == 431


async def test_more_header_fields_than_allowed_is_431(url: str) -> None:
    status, _, _ = await refused(url, request(headers=fields(100, 20)))  # and Host: 101
    assert status == 431
    async with connection(url) as (reader, writer):
        writer.write(request(headers=fields(99, 20)))  # and Host: 100
        assert (await read_answer(reader)).status == 200


async def test_ten_thousand_header_fields_are_431(url: str) -> None:
    status, _, _ = await refused(url, request(headers=fields(10_000, 20)))
    assert status == 431


async def test_an_unfinished_head_is_refused_once_past_the_limit(url: str) -> None:
    """16 MB of one header field that never ends: the answer comes after the first 16 KiB and
    the server stops reading soon after; it does not buffer the rest.
    """
    chunk = b"a" * 16384
    sent = 0
    async with connection(url) as (reader, writer):
        writer.write(b"POST /webhooks/square HTTP/1.1\r\nHost: sluice.test\r\nX-Big: ")
        answer = asyncio.ensure_future(until_closed(reader, within=10))
        with contextlib.suppress(ConnectionError):
            while sent < 16 * 1024 * 1024 and not answer.done():
                writer.write(chunk)
                await writer.drain()
                sent += len(chunk)
        received, _ = await answer
    assert parse_answer(received).status == 431
    # Up to one read of the server (256 KB), 1 MiB read and dropped while lingering, and what
    # the kernel buffers on both sides.
    assert sent < 8 * 1024 * 1024, sent


async def trickled(url: str, first: bytes, drip: Iterable[bytes]) -> tuple[int, float]:
    """Send `first`, then `drip` a piece every 50 ms until the server closes: the status it
    answered, and how long after `first` it closed."""
    async with connection(url) as (reader, writer):
        writer.write(first)
        started = time.monotonic()

        async def trickle() -> None:
            for piece in drip:
                writer.write(piece)
                await asyncio.sleep(0.05)

        sender = asyncio.ensure_future(trickle())
        received, _ = await until_closed(reader, within=5)
        elapsed = time.monotonic() - started
        sender.cancel()
    return parse_answer(received).status, elapsed


async def test_a_head_trickling_in_is_408_at_the_header_deadline(url: str) -> None:
    status, elapsed = await trickled(
        url, b"", (bytes([b]) for b in request(headers=fields(50, 100)))
    )
    assert status == 408
    assert DEADLINE - 0.1 < elapsed < DEADLINE + 1.0, elapsed


async def test_a_body_at_one_byte_at_a_time_is_408_at_the_body_deadline(url: str, db: Conn) -> None:
    head = request("/webhooks/square", method="POST", headers={"content-length": "1000"})
    status, elapsed = await trickled(url, head, itertools.repeat(b"{"))
    assert status == 408
    assert DEADLINE - 0.1 < elapsed < DEADLINE + 1.0, elapsed
    assert db.execute("SELECT count(*) FROM inbound_events").fetchone() == (0,)


async def test_a_body_shorter_than_its_content_length_is_408(url: str, db: Conn) -> None:
    head = request("/webhooks/square", method="POST", headers={"content-length": "1000"})
    status, headers, _ = await refused(url, head + b'{"event_id": "short"')
    assert status == 408
    assert headers["connection"] == "close"
    assert db.execute("SELECT count(*) FROM inbound_events").fetchone() == (0,)


async def test_a_fresh_connection_that_sends_nothing_is_closed_at_the_idle_deadline(
    url: str,
) -> None:
    async with connection(url) as (reader, _):
        received, elapsed = await until_closed(reader, within=5)
    assert received == b""
    assert DEADLINE - 0.1 < elapsed < DEADLINE + 1.0, elapsed


async def test_an_idle_kept_alive_connection_is_closed_at_the_idle_deadline(url: str) -> None:
    async with connection(url) as (reader, writer):
        # Requests within the deadline keep it open, past the deadline counted from the first.
        for _ in range(3):
            writer.write(request())
            assert (await read_answer(reader)).status == 200
            await asyncio.sleep(DEADLINE * 0.6)
        received, elapsed = await until_closed(reader, within=5)
    assert received == b""
    assert DEADLINE * 0.4 - 0.1 < elapsed < DEADLINE * 0.4 + 1.0, elapsed


async def test_pipelined_requests_are_all_answered(url: str) -> None:
    async with connection(url) as (reader, writer):
        writer.write(request() * 3)
        assert [(await read_answer(reader)).status for _ in range(3)] == [200, 200, 200]


async def test_an_upgrade_request_is_served_as_a_plain_request(url: str) -> None:
    async with connection(url) as (reader, writer):
        writer.write(request(headers={"connection": "Upgrade", "upgrade": "websocket"}))
        assert (await read_answer(reader)).status == 200


async def test_connections_past_the_cap_get_503_and_are_closed(
    serve: Callable[..., AbstractAsyncContextManager[str]],
) -> None:
    async with (
        serve(SLUICE_HTTP_MAX_CONNECTIONS=3, SLUICE_HTTP_KEEPALIVE_SECONDS=10) as url,
        connection(url) as (_, first_writer),
        connection(url),
        connection(url),
    ):
        status, headers, _ = await refused(url, request())
        assert status == 503
        assert headers["retry-after"] == "10"
        assert headers["connection"] == "close"
        first_writer.close()
        await asyncio.sleep(0.2)  # the server sees the close
        async with connection(url) as (reader, writer):
            writer.write(request())
            assert (await read_answer(reader)).status == 200


async def test_refusals_are_logged_once_then_at_most_once_per_interval(
    capsys: pytest.CaptureFixture[str],
) -> None:
    loop = asyncio.get_running_loop()
    refusals = RefusalLog(every_seconds=0.3)
    for reason in ("header_count", "header_timeout", "header_timeout"):
        refusals.count(reason, loop)
    await asyncio.sleep(0.45)
    refusals.count("connections", loop)
    await asyncio.sleep(0.7)
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    logged = [
        {k: v for k, v in line.items() if k not in ("timestamp", "level", "window_seconds")}
        for line in lines
        if line["event"] == "http.refused"
    ]
    assert logged == [
        {"event": "http.refused", "header_count": 1},
        {"event": "http.refused", "header_timeout": 2},
        {"event": "http.refused", "connections": 1},
    ]


def test_the_open_files_limit_is_raised_to_the_hard_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2000:
        pytest.skip(f"hard RLIMIT_NOFILE {hard} is too low to lower and raise again")
    resource.setrlimit(resource.RLIMIT_NOFILE, (1000, hard))
    try:
        raise_open_files_limit(1500)
        raised, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        assert raised == (1500 if hard == resource.RLIM_INFINITY else hard)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def test_bodies_of_unfinished_requests_share_one_budget(
    serve: Callable[..., AbstractAsyncContextManager[str]], db: Conn
) -> None:
    """Each stalled body holds what it sent; past the process's budget the next one is 503,
    and a delivery that fits still goes through. A stalled body that ends gives its share back."""
    stalled = request("/webhooks/square", method="POST", headers={"content-length": "30000"}) + (
        b" " * 25_000
    )
    async with (
        serve(
            SLUICE_MAX_BODY_BYTES=32_768,
            SLUICE_HTTP_MAX_PENDING_BODY_BYTES=65_536,
            SLUICE_HTTP_BODY_TIMEOUT_SECONDS=10,
        ) as url,
        connection(url) as (_, first),
        connection(url) as (_, second),
    ):
        for writer in (first, second):  # 50,000 bytes held
            writer.write(stalled)
            await writer.drain()
        await asyncio.sleep(0.2)
        status, headers, _ = await refused(url, stalled)  # 75,000: past the budget
        assert (status, headers["retry-after"], headers["connection"]) == (503, "10", "close")

        body, signed = signed_square_delivery(
            square_event("booking.created"), key=SIGNATURE_KEY, url=WEBHOOK_URL
        )
        async with connection(url) as (reader, writer):
            writer.write(request("/webhooks/square", method="POST", headers=signed, body=body))
            assert (await read_answer(reader)).status == 200

        first.close()  # its 25,000 bytes are given back
        await asyncio.sleep(0.2)
        async with connection(url) as (reader, writer):
            writer.write(stalled)
            await writer.drain()
            with pytest.raises(TimeoutError):  # held, not refused: within the budget again
                await read_answer(reader, within=0.5)
    assert db.execute("SELECT count(*) FROM inbound_events").fetchone() == (1,)
