"""Every HTTP server command runs with the same limits: `sluice serve` (also with several worker
processes, which get the protocol and its limits pickled), `sluice api` and `sluice admin`.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import pytest

from tests.support.raw_http import connection, parse_answer, request, until_closed
from tests.support.servers import sluice_server

if TYPE_CHECKING:
    from pathlib import Path

SHORT = {
    "SLUICE_HTTP_HEADER_TIMEOUT_SECONDS": "1",
    "SLUICE_HTTP_KEEPALIVE_SECONDS": "1",
    "SLUICE_API_TOKEN": "api-token-for-this-test",
    "SLUICE_ADMIN_TOKEN": "admin-token-for-this-test",
}


async def answer_to(url: str, data: bytes, *, trickle: bool = False) -> tuple[int, float]:
    async with connection(url) as (reader, writer):
        started = time.monotonic()
        if trickle:
            writer.write(data[:10])  # and nothing more: the head never ends
        else:
            writer.write(data)
        received, _ = await until_closed(reader, within=10)
        return parse_answer(received).status, time.monotonic() - started


@pytest.mark.slow
@pytest.mark.parametrize(
    "command",
    [["serve", "--workers", "2"], ["api"], ["admin"]],
    ids=["serve-workers", "api", "admin"],
)
async def test_each_server_command_refuses_oversized_and_slow_heads(
    command: list[str], database_url: str, tmp_path: Path
) -> None:
    with sluice_server(command, database_url, tmp_path / "server.log", **SHORT) as (url, _):
        too_many = request(headers={f"x-f{i}": "1" for i in range(150)})
        # With two workers, each connection lands on either: ask often enough to meet both.
        for _ in range(4):
            status, _ = await answer_to(url, too_many)
            assert status == 431
        status, elapsed = await answer_to(url, request(), trickle=True)
        assert status == 408
        assert 0.8 < elapsed < 2.5, elapsed
        statuses = await asyncio.gather(*(answer_to(url, request()) for _ in range(4)))
        assert {status for status, _ in statuses} == {200}
