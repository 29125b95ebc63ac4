"""HTTP/1.1 over plain sockets, for tests that must send what no HTTP client library would: slow,
unfinished or oversized requests, and connections that never send anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: dict[str, str]
    raw: bytes


def parse_answer(raw: bytes) -> Answer:
    head, _, _ = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Answer(int(status_line.split()[1]), headers, raw)


@contextlib.asynccontextmanager
async def connection(url: str) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def until_closed(reader: asyncio.StreamReader, within: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and how long that took."""
    started = time.monotonic()
    received = bytearray()
    async with asyncio.timeout(within):
        while True:
            try:
                chunk = await reader.read(65536)
            except ConnectionError:  # reset, or a broken pipe noticed while writing
                # StreamReader raises the error before handing out what it had already read,
                # such as the answer that came before the reset.
                received += reader._buffer  # type: ignore[attr-defined]
                break
            if not chunk:
                break
            received += chunk
    return bytes(received), time.monotonic() - started


async def read_answer(reader: asyncio.StreamReader, within: float = 5.0) -> Answer:
    """One answer with a Content-Length body, leaving the connection open."""
    async with asyncio.timeout(within):
        head = await reader.readuntil(b"\r\n\r\n")
        answer = parse_answer(head)
        body = await reader.readexactly(int(answer.headers.get("content-length", "0")))
    return Answer(answer.status, answer.headers, head + body)


def request(
    path: str = "/healthz",
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: bytes = b"",
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: sluice.test"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
