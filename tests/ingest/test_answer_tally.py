"""Every webhook answer is counted in PostgreSQL per source, reason and minute, for the console;
of a refused request nothing else is stored."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx

from devkit.simulate import signed_square_delivery, square_event
from ingest.app import create_app
from tests.support.services import running_server
from tests.support.square import SIGNATURE_KEY, WEBHOOK_URL

if TYPE_CHECKING:
    import psycopg

    from sluice.settings import Settings


async def test_answers_are_tallied_by_reason_and_of_refusals_nothing_else_is_stored(
    settings: Settings, db: psycopg.Connection[Any]
) -> None:
    body, headers = signed_square_delivery(
        square_event("booking.created"), key="wrong", url=WEBHOOK_URL
    )
    async with running_server(create_app(settings)) as url, httpx.AsyncClient(base_url=url) as http:
        for _ in range(3):
            answer = await http.post("/webhooks/square", content=body, headers=headers)
            assert answer.status_code == 401
        unsigned = {k: v for k, v in headers.items() if not k.startswith("x-square")}
        answer = await http.post("/webhooks/square", content=body, headers=unsigned)
        assert answer.status_code == 401
        good, signed = signed_square_delivery(
            square_event("booking.created"), key=SIGNATURE_KEY, url=WEBHOOK_URL
        )
        for _ in range(2):
            assert (await http.post("/webhooks/square", content=good, headers=signed)).is_success
    # The tally is written every few seconds, and at the stop.
    rows = db.execute(
        "SELECT source, reason, sum(count) FROM webhook_answers GROUP BY 1, 2 ORDER BY reason"
    ).fetchall()
    assert rows == [
        ("square", "accepted", 1),
        ("square", "bad_signature", 3),
        ("square", "duplicate", 1),
        ("square", "missing_signature", 1),
    ]
    assert db.execute("SELECT count(*) FROM inbound_events").fetchone() == (1,)
