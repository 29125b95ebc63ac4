"""The console in a real browser: Playwright driving the system's Chromium, headless, against
the real pipeline (ingest, relay, the jobs consumer, admin). Skipped, loudly, where no Chromium
is installed (`apt-get install chromium`); Playwright never downloads a browser of its own.

Screenshots of each page, at 1280 and 390 pixels wide, are written to `.test-output/console/`.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from devkit.simulate import square_event, square_kafka_message
from tests.support.console import ADMIN_TOKEN, Pipeline, console_settings, pipeline_in_thread
from tests.support.paths import ROOT

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    import psycopg
    from playwright.sync_api import Browser, Page

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = ROOT / ".test-output" / "console"
WIDE, NARROW = 1280, 390

pytestmark = [
    pytest.mark.broker,
    pytest.mark.slow,
    pytest.mark.browser,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(),
        reason="BROWSER TESTS SKIPPED: no Chromium (apt-get install chromium)",
    ),
]


@pytest.fixture
def pipeline(database_url: str, kafka_bootstrap: str) -> Iterator[Pipeline]:
    with pipeline_in_thread(console_settings(database_url, kafka_bootstrap)) as running:
        yield running


@pytest.fixture
def browser() -> Iterator[Browser]:
    from playwright.sync_api import sync_playwright  # noqa: PLC0415 - only where it runs

    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


def logged_in(browser: Browser, pipeline: Pipeline, width: int = WIDE) -> Page:
    page = browser.new_page(viewport={"width": width, "height": 900})
    page.goto(f"{pipeline.console_url}/")
    assert "/console/login" in page.url  # not logged in: sent to the login page
    page.get_by_label("Admin token").fill(ADMIN_TOKEN)
    page.get_by_label("Your name").fill("ann")
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(re.compile(r".*/console/$"))
    return page


def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def eventually(check: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError("not reached in time")
        time.sleep(0.2)


def job_status(db: psycopg.Connection[Any], booking_id: str) -> Any:
    row = db.execute(
        "SELECT booking_version FROM jobs WHERE booking_id = %s", (booking_id,)
    ).fetchone()
    return None if row is None else row[0]


def test_an_event_appears_live_and_its_journey_shows_applied_then_stale(
    pipeline: Pipeline, browser: Browser, db: psycopg.Connection[Any]
) -> None:
    page = logged_in(browser, pipeline)
    shot(page, "overview-1280")
    page.get_by_role("link", name="Events").click()
    page.wait_for_url(re.compile(r".*/console/events$"))
    page.wait_for_timeout(500)  # the live stream is open

    newer = square_event("booking.updated", entity_id="bkLive", version=3)
    newer_id = pipeline.deliver(newer)
    row = page.locator(f'tr[data-event="{newer_id}"]')
    row.wait_for(timeout=15_000)  # added by the live stream: the page was not reloaded
    assert "booking.updated" in row.inner_text()
    eventually(lambda: job_status(db, "bkLive") == 3)

    older = square_event("booking.updated", entity_id="bkLive", version=2)
    older_id = pipeline.deliver(older)
    eventually(lambda: db.execute(
        "SELECT 1 FROM consumer_dedupe WHERE event_id = %s", (older_id,)
    ).fetchone())  # fmt: skip
    shot(page, "events-1280")

    assert pipeline.deliver(newer, retry_number=1) == newer_id  # Square delivers it again
    page.goto(f"{pipeline.console_url}/events/{newer_id}")
    assert page.locator('[data-outcome="jobs"]').inner_text() == "applied"
    journey = page.locator("ol.journey").inner_text()
    assert "Delivered again" in journey
    assert "retry 1" in journey
    assert "verified by key 1:" in journey
    ownership = page.locator("table.ownership")
    assert "booking_version" in ownership.inner_text()
    assert ownership.locator("tr.owner-app").count() > 0  # app-owned columns told apart
    shot(page, "event-applied-1280")

    page.goto(f"{pipeline.console_url}/events/{older_id}")
    assert page.locator('[data-outcome="jobs"]').inner_text() == "stale"
    assert "3" in page.locator("pre.detail").inner_text()  # the row's version is shown
    shot(page, "event-stale-1280")
    assert job_status(db, "bkLive") == 3  # the older event changed nothing


def test_a_payload_holding_markup_is_shown_as_text_and_the_body_downloads_byte_exact(
    pipeline: Pipeline, browser: Browser
) -> None:
    event = square_event("booking.created", entity_id="bkXss", version=1)
    event["data"]["object"]["booking"]["customer_note"] = "<script>window.pwned=1</script><b>x"
    event_id = pipeline.deliver(event)
    page = logged_in(browser, pipeline)
    page.goto(f"{pipeline.console_url}/events/{event_id}")
    body = page.locator("pre.body").inner_text()
    assert "<script>window.pwned=1</script><b>x" in body  # text, not markup
    assert page.evaluate("typeof window.pwned") == "undefined"
    assert page.locator("pre.body b").count() == 0

    with page.expect_download() as download:
        page.get_by_role("link", name="Download the body, byte for byte").click()
    downloaded = Path(download.value.path()).read_bytes()
    assert json.loads(downloaded) == event
    raw = httpx.get(
        f"{pipeline.console_url}/events/{event_id}/body",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    assert raw.content == downloaded
    assert ADMIN_TOKEN not in page.content()  # no secret is ever rendered


def _dead_letter(db: psycopg.Connection[Any], booking_id: str, offset: int) -> int:
    """A dead letter as the jobs consumer writes one, for a message that failed on a fault
    since mended: put back, it applies."""
    message = square_kafka_message(square_event("booking.created", entity_id=booking_id))
    row = db.execute(
        """INSERT INTO dead_letters (consumer, topic, partition, "offset", key, value, headers,
               event_id, error_type, error)
           VALUES ('jobs', %s, 0, %s, %s, %s, %s, %s, 'OperationalError', 'the database went away')
           RETURNING id""",
        (
            message.topic,
            offset,
            message.key.encode(),
            message.payload_json.encode(),
            json.dumps(message.headers),
            message.headers["ce_id"],
        ),
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_dead_letters_are_redriven_and_discarded_from_the_page_once_each(
    pipeline: Pipeline, browser: Browser, db: psycopg.Connection[Any]
) -> None:
    redriven = _dead_letter(db, "bkRedrive", 1)
    discarded = _dead_letter(db, "bkDiscard", 2)
    page = logged_in(browser, pipeline)
    page.goto(f"{pipeline.console_url}/dead-letters")
    assert page.locator("tr[data-dead-letter]").count() == 2
    shot(page, "dead-letters-1280")

    page.get_by_role("button", name=f"Redrive dead letter {redriven}").click()
    page.wait_for_load_state()
    assert "Redrove 1" in page.locator("#flash").inner_text()
    eventually(lambda: job_status(db, "bkRedrive") == 1)  # the row changed

    page.goto(f"{pipeline.console_url}/dead-letters/{discarded}")
    page.get_by_label("Reason for discarding").fill("a test booking")
    form = page.evaluate("Object.fromEntries(new FormData(document.getElementById('discard')))")
    page.get_by_role("button", name="Discard", exact=True).click()
    page.wait_for_load_state()
    assert "Discarded 1" in page.locator("#flash").inner_text()
    # The same form sent again (a double click, a resubmit): nothing more is done.
    again = page.request.post(f"{pipeline.console_url}/dead-letters/discard", form=form)
    assert again.ok
    assert "Already done" in again.text()
    states = db.execute(
        "SELECT id, redriven_by, discarded_by, discard_reason FROM dead_letters ORDER BY id"
    ).fetchall()
    assert states == [
        (redriven, "console:ann", None, None),
        (discarded, None, "console:ann", "a test booking"),
    ]
    page.get_by_role("link", name="Audit log").click()
    audit = page.locator("#audit").inner_text()
    assert "dlq.redrive" in audit
    assert "dlq.discard" in audit
    shot(page, "audit-1280")


def test_a_paused_consumer_lets_lag_grow_and_drains_it_when_resumed(
    pipeline: Pipeline, browser: Browser, db: psycopg.Connection[Any]
) -> None:
    page = logged_in(browser, pipeline)
    page.get_by_role("link", name="Replay, reconcile, pause").click()
    page.get_by_role("button", name="Pause consumer:jobs").click()
    page.wait_for_load_state()
    assert "Paused consumer:jobs" in page.locator("#flash").inner_text()
    time.sleep(3)  # every replica has seen it (the fallback poll is 2 s here)

    for n in range(5):
        pipeline.deliver(square_event("booking.created", entity_id=f"bkPaused{n}"))
    page.goto(f"{pipeline.console_url}/")
    assert "consumer:jobs" in page.locator("#paused").locator("..").inner_text()

    def lag() -> int:
        cells = page.locator('[data-lag="jobs"]').all_inner_texts()
        return sum(int(c.replace(",", "")) for c in cells)

    eventually(lambda: lag() >= 5, timeout=30)  # redrawn live, from Kafka
    shot(page, "overview-paused-1280")
    assert job_status(db, "bkPaused0") is None

    page.goto(f"{pipeline.console_url}/recovery")
    page.get_by_role("button", name="Resume consumer:jobs").click()
    page.wait_for_load_state()
    eventually(lambda: job_status(db, "bkPaused4") == 1)
    page.goto(f"{pipeline.console_url}/")
    eventually(lambda: lag() == 0, timeout=30)


def test_a_replay_dry_run_counts_before_anything_is_replayed(
    pipeline: Pipeline, browser: Browser, db: psycopg.Connection[Any]
) -> None:
    for n in range(3):
        pipeline.deliver(square_event("booking.created", entity_id=f"bkReplay{n}"))
    page = logged_in(browser, pipeline)
    page.goto(f"{pipeline.console_url}/recovery")
    page.get_by_label("Source").select_option("square")
    page.get_by_role("button", name="Dry run: count matching events").click()
    page.wait_for_load_state()
    assert "3 stored square events match" in page.locator("#replay-count").inner_text()
    assert db.execute("SELECT count(*) FROM audit_log").fetchone() == (0,)  # nothing done
    shot(page, "recovery-1280")
    page.get_by_role("button", name="Replay these 3 events").click()
    page.wait_for_load_state()
    assert "Replay of square started" in page.locator("#flash").inner_text()
    eventually(lambda: db.execute(
        "SELECT 1 FROM audit_log WHERE action = 'replay.store'"
    ).fetchone())  # fmt: skip


def test_every_page_fits_a_phone_and_starts_with_a_skip_link(
    pipeline: Pipeline, browser: Browser
) -> None:
    event_id = pipeline.deliver(square_event("booking.created", entity_id="bkPhone"))
    page = logged_in(browser, pipeline, width=NARROW)
    for name, path in [
        ("overview", "/"),
        ("events", "/events"),
        ("event", f"/events/{event_id}"),
        ("dead-letters", "/dead-letters"),
        ("recovery", "/recovery"),
        ("audit", "/audit"),
    ]:
        page.goto(f"{pipeline.console_url}{path}")
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= NARROW, f"{name} is {width} px wide"
        shot(page, f"{name}-390")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
