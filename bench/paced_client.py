"""A paced HTTP/1.1 load generator that notes when each request's answer arrived.

wrk cannot say when a particular request was answered, and the end-to-end benchmark times each
event from its 2xx. This sends pre-built requests on a few keep-alive connections at a fixed
overall rate (request i is due at start + i / rate) and records each answer's wall-clock time. It
reads only what ingest answers (a status line, headers with Content-Length, a small body), so its
cost per request stays a few tens of microseconds.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import uvloop


@dataclass
class PacedResult:
    answered_at: dict[str, float] = field(default_factory=dict)  # 2xx wall time, by tag
    statuses: Counter[int] = field(default_factory=Counter)
    seconds: float = 0.0

    @property
    def accepted_per_s(self) -> float:
        return len(self.answered_at) / self.seconds if self.seconds else 0.0


def http_post(host: str, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def send_paced(
    host: str, port: int, requests: list[tuple[str, bytes]], rate: float, connections: int
) -> PacedResult:
    """Send `(tag, raw request)` pairs at `rate` per second; the result maps tags to 2xx times."""
    result = PacedResult()
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.1

    async def connection(index: int) -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            for i in range(index, len(requests), connections):
                tag, request = requests[i]
                await asyncio.sleep(max(0.0, start + i / rate - loop.time()))
                writer.write(request)
                status = int((await reader.readline()).split()[1])
                length = 0
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                await reader.readexactly(length)
                if 200 <= status < 300:
                    result.answered_at[tag] = time.time()
                else:
                    result.statuses[status] += 1
        finally:
            writer.close()

    began = time.perf_counter()
    await asyncio.gather(*(connection(i) for i in range(connections)))
    result.seconds = time.perf_counter() - began
    return result


def send_paced_in_process(
    host: str, port: int, requests: list[tuple[str, bytes]], rate: float, connections: int
) -> PacedResult:
    """`send_paced` in a process of its own (blocking), so the caller's event loop, busy
    watching for results, cannot delay a send or the noting of an answer."""
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(
        target=_run, args=(host, port, requests, rate, connections, sender), daemon=True
    )
    process.start()
    result: PacedResult = receiver.recv()
    process.join(10)
    return result


def _run(
    host: str,
    port: int,
    requests: list[tuple[str, bytes]],
    rate: float,
    connections: int,
    out: Any,  # noqa: ANN401 - a multiprocessing connection
) -> None:
    out.send(uvloop.run(send_paced(host, port, requests, rate, connections)))
