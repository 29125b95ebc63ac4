"""The Square subscription the tests sign deliveries for, and the settings of a reconcile
against the fake Square."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sluice.settings import Settings

if TYPE_CHECKING:
    from devkit.fakes.square import FakeSquare

SIGNATURE_KEY = "test-signature-key-1"
ROTATED_KEY = "test-signature-key-2"
WEBHOOK_URL = "https://sluice.example.com/webhooks/square"


def reconcile_settings(database_url: str, fake: FakeSquare, url: str) -> Settings:
    """A reconcile against `fake` served at `url`, unthrottled (the fake has no rate limit)."""
    return Settings(
        DATABASE_URL=database_url,
        SQUARE_API_URL=url,
        SQUARE_ACCESS_TOKEN=fake.token,
        SQUARE_REQUESTS_PER_SECOND=1000,
    )
