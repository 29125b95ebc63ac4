"""The console's safety over plain HTTP: its session cookie, CSRF, one action per form, bearer
tokens for scripts, escaping, and a 4xx (never a 5xx) for whatever a client sends. The browser
walks through the pages in test_console_browser.py."""

from __future__ import annotations

import re
import uuid
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from devkit.simulate import square_event
from recovery.admin import create_admin_app
from sluice.settings import Settings
from tests.support.recovery import store_events
from tests.support.services import running_server
from tests.support.square import SIGNATURE_KEY

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import psycopg
    from sqlalchemy.ext.asyncio import AsyncEngine

TOKEN = "console-token-for-tests"  # noqa: S105


def _settings(database_url: str, **more: Any) -> Settings:
    return Settings(
        DATABASE_URL=database_url,
        SLUICE_ADMIN_TOKEN=TOKEN,
        SQUARE_WEBHOOK_SIGNATURE_KEYS=SIGNATURE_KEY,
        **more,
    )


@pytest.fixture
async def console(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = _settings(database_url, SLUICE_CONSOLE_SECURE_COOKIE="false")
    async with (
        running_server(create_admin_app(settings)) as url,
        httpx.AsyncClient(base_url=f"{url}/console") as client,
    ):
        yield client


async def log_in(client: httpx.AsyncClient) -> str:
    """Logs in; the CSRF token the pages carry."""
    answer = await client.post("/login", data={"token": TOKEN, "name": "ann", "next": "/console/"})
    assert answer.status_code == 303
    page = await client.get("/recovery")
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found is not None
    return found.group(1)


async def test_login_keeps_a_strict_http_only_secure_cookie_under_the_console_only(
    database_url: str,
) -> None:
    settings = _settings(database_url, SLUICE_CONSOLE_SESSION_MINUTES="30")
    async with (
        running_server(create_admin_app(settings)) as url,
        httpx.AsyncClient(base_url=f"{url}/console") as client,
    ):
        refused = await client.post("/login", data={"token": "wrong", "next": "/console/"})
        assert refused.status_code == 401
        assert "set-cookie" not in refused.headers
        answer = await client.post("/login", data={"token": TOKEN, "next": "https://evil.example/"})
    assert answer.status_code == 303
    assert answer.headers["location"] == "/console/"  # never an address elsewhere
    cookie = answer.headers["set-cookie"].lower()
    for attribute in ("httponly", "samesite=strict", "secure", "path=/console", "max-age=1800"):
        assert attribute in cookie


async def test_pages_send_a_visitor_to_log_in_and_a_closed_console_says_why(
    console: httpx.AsyncClient, database_url: str
) -> None:
    answer = await console.get("/events?source=square")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/console/login?next=%2Fconsole%2Fevents%3Fsource%3Dsquare"
    # Without an admin token the console is closed, like every admin route.
    async with (
        running_server(create_admin_app(Settings(DATABASE_URL=database_url))) as url,
        httpx.AsyncClient(base_url=f"{url}/console") as closed,
    ):
        for answer in (await closed.get("/"), await closed.post("/login", data={"token": "x"})):
            assert answer.status_code == 503
            assert "SLUICE_ADMIN_TOKEN is not set" in answer.text


async def test_a_form_without_the_sessions_csrf_token_changes_nothing(
    console: httpx.AsyncClient, db: psycopg.Connection[Any]
) -> None:
    await log_in(console)
    key = str(uuid.uuid4())
    for csrf in (None, "forged"):
        data = {"request_key": key, **({"csrf": csrf} if csrf else {})}
        answer = await console.post("/pause/relay", data=data)
        assert answer.status_code == 403
    assert db.execute("SELECT count(*) FROM pauses").fetchone() == (0,)
    assert db.execute("SELECT count(*) FROM audit_log").fetchone() == (0,)


async def test_one_form_submitted_twice_acts_once(
    console: httpx.AsyncClient, db: psycopg.Connection[Any]
) -> None:
    csrf = await log_in(console)
    form = {"csrf": csrf, "request_key": str(uuid.uuid4()), "reason": "deploying"}
    first = await console.post("/pause/consumer:jobs", data=form)
    assert first.status_code == 303
    await console.post("/resume/consumer:jobs", data={**form, "request_key": str(uuid.uuid4())})
    again = await console.post("/pause/consumer:jobs", data=form)  # the first form, resent
    assert again.status_code == 303
    assert "Already done" in (await console.get("/recovery")).text
    assert db.execute("SELECT count(*) FROM pauses").fetchone() == (0,)  # resumed, not re-paused
    actions = db.execute("SELECT actor, action FROM audit_log ORDER BY id").fetchall()
    assert actions == [
        ("console:ann", "console:pause"),
        ("console:ann", "pause"),
        ("console:ann", "console:resume"),
        ("console:ann", "resume"),
    ]


async def test_a_script_uses_the_bearer_token_without_a_form_token(
    console: httpx.AsyncClient, db: psycopg.Connection[Any]
) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert (await console.get("/events", headers=auth)).status_code == 200
    answer = await console.post(
        "/pause/relay", data={"request_key": str(uuid.uuid4())}, headers=auth
    )
    assert answer.status_code == 303
    assert db.execute("SELECT paused_by FROM pauses").fetchall() == [("console:bearer",)]
    wrong = await console.get("/events", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 303  # to the login page: a wrong token is no login


async def test_provider_values_are_escaped_and_no_secret_is_rendered(
    console: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    event = square_event("booking.created", entity_id="<b>bk</b>")
    event["data"]["object"]["booking"]["customer_note"] = "<script>alert(1)</script>"
    [event_id] = await store_events(engine, [event])
    await log_in(console)
    listed = await console.get("/events")
    assert "&lt;b&gt;bk&lt;/b&gt;" in listed.text
    assert "<b>bk</b>" not in listed.text
    page = await console.get(f"/events/{event_id}")
    assert page.status_code == 200
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert "<script>alert" not in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    for path in ("/", "/events", f"/events/{event_id}", "/dead-letters", "/recovery", "/audit"):
        text = (await console.get(path)).text
        assert TOKEN not in text
        assert SIGNATURE_KEY not in text


async def test_a_body_downloads_byte_for_byte_by_either_id(
    console: httpx.AsyncClient, engine: AsyncEngine, db: psycopg.Connection[Any]
) -> None:
    event = square_event("booking.created", entity_id="bk-download")
    [event_id] = await store_events(engine, [event])
    row = db.execute(
        "SELECT body, provider_event_id FROM inbound_events WHERE id = %s", (event_id,)
    ).fetchone()
    assert row is not None
    stored, provider_id = row
    await log_in(console)
    for ref in (str(event_id), provider_id):
        answer = await console.get(f"/events/{ref}/body")
        assert answer.status_code == 200
        assert answer.content == bytes(stored)
        assert answer.headers["content-type"] == "application/octet-stream"
        assert f'filename="{provider_id}.json"' in answer.headers["content-disposition"]
    missing = await console.get(f"/events/{uuid.uuid4()}/body")
    assert missing.status_code == 404
    assert "No stored event" in missing.text


@pytest.mark.parametrize(
    "path",
    [
        "/events?after=not-a-cursor",
        "/events?source=stripe",
        "/events?outcome=lost",
        "/events?since=yesterday",
        "/events?until=2026-13-45",
        "/events?type=" + "x" * 5000,
        "/events?entity=%00",
        "/events/" + "e" * 300,
        "/events/%00",
        "/events/ffffffff-ffff-7fff-bfff-ffffffffffff",  # a v7 id past any real time
        "/events/ffffffff-ffff-7fff-bfff-ffffffffffff/body",
        "/dead-letters?consumer=nobody",
        "/dead-letters/not-a-number",
        "/dead-letters/99999999999999999999999",
        "/stream?view=everything",
    ],
)
async def test_whatever_a_client_asks_gets_a_4xx_that_says_why(
    console: httpx.AsyncClient, path: str
) -> None:
    await log_in(console)
    answer = await console.get(path)
    assert 400 <= answer.status_code < 500, answer.text
    assert 'role="alert"' in answer.text


async def test_bad_forms_get_a_4xx_and_change_nothing(
    console: httpx.AsyncClient, db: psycopg.Connection[Any]
) -> None:
    csrf = await log_in(console)
    key = str(uuid.uuid4())
    cases = [
        ("/pause/nothing", {"csrf": csrf, "request_key": key}, 400),
        ("/pause/relay", {"csrf": csrf}, 400),  # no request key
        ("/dead-letters/discard", {"csrf": csrf, "request_key": key, "id": "1"}, 400),  # no reason
        ("/replay", {"csrf": csrf, "request_key": key, "source": "stripe"}, 400),
        ("/replay", {"csrf": csrf, "request_key": key, "source": "square", "entity": "x"}, 400),
        ("/reconcile/stripe", {"csrf": csrf, "request_key": key}, 400),
        ("/pause/relay", {"csrf": csrf, "request_key": key, "reason": "r" * 20_000}, 413),
    ]
    for path, data, status in cases:
        answer = await console.post(path, data=data)
        assert answer.status_code == status, (path, answer.text)
    not_utf8 = await console.post(
        "/pause/relay",
        content=b"csrf=\xff\xfe",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert not_utf8.status_code == 400
    assert db.execute("SELECT count(*) FROM pauses").fetchone() == (0,)
    assert db.execute("SELECT count(*) FROM audit_log").fetchone() == (0,)


def test_the_overview_knows_the_topics_of_every_consumer_group() -> None:
    from consumers.registry import CONSUMERS  # noqa: PLC0415
    from schemas.topics import CONSUMER_TOPICS  # noqa: PLC0415

    assert sorted(CONSUMER_TOPICS) == sorted(CONSUMERS)


async def test_the_overview_shows_how_far_recovery_has_looked_and_warns_when_behind(
    console: httpx.AsyncClient, db: psycopg.Connection[Any]
) -> None:
    await log_in(console)
    assert "No recovery pass has run yet" in (await console.get("/")).text
    db.execute(
        'INSERT INTO recovery_watermarks ("pass", watermark) VALUES'
        " ('square:events', now() - interval '5 hours'),"
        " ('square:customers', now() - interval '10 minutes')"
    )
    page = (await console.get("/")).text
    marks = page[page.index('id="watermarks"') :]
    marks = marks[: marks.index("</ul>")]
    events = marks[marks.index("square:events") :].split("</li>")[0]
    customers = marks[marks.index("square:customers") :].split("</li>")[0]
    assert "behind" in events
    assert 'class="warn"' in events
    assert "behind" not in customers


def _leads(db: psycopg.Connection[Any], status: str, count: int, prefix: str) -> None:
    db.execute(
        "INSERT INTO lead_sync (record_id, status)"
        " SELECT %s || n, %s FROM generate_series(1, %s) AS n",
        (prefix, status, count),
    )


def _writeback_line(page: str) -> str:
    card = page[page.index('id="writeback"') :]
    return card[card.index("<p>") + 3 : card.index("</p>")]


async def test_the_overview_counts_outstanding_write_backs_exactly_and_estimates_the_synced(
    console: httpx.AsyncClient, db: psycopg.Connection[Any]
) -> None:
    await log_in(console)
    _leads(db, "synced", 30, "recS")
    _leads(db, "pending", 2, "recP")
    _leads(db, "failed", 1, "recF")
    _leads(db, "conflict", 1, "recC")
    # Never analyzed: the synced leads are counted, and the page says so.
    line = "pending 2, failed 1, in conflict 1; 30 synced; conflicts 0 open"
    assert _writeback_line((await console.get("/")).text) == line
    db.execute("ANALYZE lead_sync")
    _leads(db, "synced", 5, "recT")  # not in the estimate until the next analyze
    _leads(db, "pending", 1, "recQ")  # counted at once
    line = "pending 3, failed 1, in conflict 1; about 29 synced; conflicts 0 open"
    assert _writeback_line((await console.get("/")).text) == line
