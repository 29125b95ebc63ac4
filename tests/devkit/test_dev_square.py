"""The fake Square of `sluice dev` and the chaos run: `sluice square fake-api` as a process, the
simulated merchant, event search enabled before any event, its URL and token for the components.
"""

from __future__ import annotations

import httpx

from devkit.dev_square import start_dev_square
from devkit.simulate import SIMULATED_LOCATION_ID, SIMULATED_MERCHANT_ID, square_event
from sluice.settings import Settings


def test_dev_runs_the_fake_square_as_the_simulated_merchant_with_search_enabled() -> None:
    square = start_dev_square(Settings(SQUARE_API_URL=None))
    assert square.process is not None
    try:
        url = square.env["SQUARE_API_URL"]
        assert square.info["square_fake_api_url"] == url
        auth = {"authorization": f"Bearer {square.env['SQUARE_ACCESS_TOKEN']}"}
        merchant = httpx.get(f"{url}/v2/merchants/me", headers=auth).json()["merchant"]
        assert (merchant["id"], merchant["main_location_id"]) == (
            SIMULATED_MERCHANT_ID,
            SIMULATED_LOCATION_ID,
        )
        event = square_event("customer.created")
        recorded = httpx.post(f"{url}/_fake/events", json=event).json()
        assert recorded["searchable"] is True
        found = httpx.post(f"{url}/v2/events", json={}, headers=auth).json()
        assert [e["event_id"] for e in found["events"]] == [event["event_id"]]
    finally:
        square.process.terminate()
        square.process.wait(10)


def test_a_configured_square_api_is_used_as_it_is() -> None:
    square = start_dev_square(Settings(SQUARE_API_URL="https://connect.squareup.com"))
    assert (square.process, square.env, square.info) == (None, {}, {})
