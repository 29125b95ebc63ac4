from __future__ import annotations

import pytest
from pydantic import ValidationError

from sluice.settings import Settings


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SQUARE_WEBHOOK_SIGNATURE_KEYS", "SQUARE_WEBHOOK_URL", "SLUICE_MAX_BODY_BYTES"):
        monkeypatch.delenv(name, raising=False)


def test_signature_keys_are_comma_separated_and_secret() -> None:
    settings = Settings(SQUARE_WEBHOOK_SIGNATURE_KEYS=" key-one , key-two ,")
    assert [k.get_secret_value() for k in settings.square_webhook_signature_keys] == [
        "key-one",
        "key-two",
    ]
    assert "key-one" not in repr(settings)
    assert "key-one" not in str(settings.model_dump())


def test_placeholder_key_is_refused() -> None:
    with pytest.raises(ValidationError, match="placeholder"):
        Settings(SQUARE_WEBHOOK_SIGNATURE_KEYS="real-key,changeme")


@pytest.mark.parametrize(
    "url",
    [
        "postgres://u:p@h:5432/d",
        "postgresql://u:p@h:5432/d",
        "postgresql+psycopg://u:p@h:5432/d",
    ],
)
def test_database_url_is_normalised_to_psycopg(url: str) -> None:
    assert Settings(DATABASE_URL=url).database_url == "postgresql+psycopg://u:p@h:5432/d"


def test_non_postgres_database_url_is_refused() -> None:
    with pytest.raises(ValidationError, match="postgresql"):
        Settings(DATABASE_URL="mysql://u@h/d")


def test_verification_needs_key_and_url() -> None:
    assert not Settings().square_verification_configured
    assert not Settings(SQUARE_WEBHOOK_SIGNATURE_KEYS="k").square_verification_configured
    assert Settings(
        SQUARE_WEBHOOK_SIGNATURE_KEYS="k", SQUARE_WEBHOOK_URL="https://x/y"
    ).square_verification_configured


def test_body_limit_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLUICE_MAX_BODY_BYTES", "2048")
    assert Settings().max_body_bytes == 2048
    monkeypatch.setenv("SLUICE_MAX_BODY_BYTES", "0")
    with pytest.raises(ValidationError):
        Settings()


def test_http_limits_default_to_sizes_that_let_webhooks_through() -> None:
    settings = Settings()
    assert (
        settings.http_max_header_bytes,
        settings.http_max_header_field_bytes,
        settings.http_max_headers,
    ) == (16384, 8192, 100)
    assert (
        settings.http_header_timeout_seconds,
        settings.http_body_timeout_seconds,
        settings.http_keepalive_seconds,
    ) == (10, 30, 5)
    assert settings.http_max_connections == 2048
    assert settings.http_max_pending_body_bytes == 64 * 1024 * 1024


def test_http_limits_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLUICE_HTTP_MAX_HEADER_BYTES", "4096")
    monkeypatch.setenv("SLUICE_HTTP_MAX_HEADER_FIELD_BYTES", "4096")
    monkeypatch.setenv("SLUICE_HTTP_BODY_TIMEOUT_SECONDS", "0.5")
    monkeypatch.setenv("SLUICE_HTTP_MAX_CONNECTIONS", "3")
    settings = Settings()
    assert settings.http_max_header_bytes == settings.http_max_header_field_bytes == 4096
    assert settings.http_body_timeout_seconds == 0.5
    assert settings.http_max_connections == 3


@pytest.mark.parametrize(
    "setting",
    [
        {"SLUICE_HTTP_MAX_HEADER_BYTES": "100"},
        {"SLUICE_HTTP_MAX_HEADERS": "0"},
        {"SLUICE_HTTP_HEADER_TIMEOUT_SECONDS": "0"},
        {"SLUICE_HTTP_KEEPALIVE_SECONDS": "-1"},
        {"SLUICE_HTTP_MAX_CONNECTIONS": "0"},
        # A field can never be larger than the head it is in.
        {"SLUICE_HTTP_MAX_HEADER_BYTES": "4096", "SLUICE_HTTP_MAX_HEADER_FIELD_BYTES": "8192"},
        # Nor can one body be larger than every body together may be.
        {"SLUICE_MAX_BODY_BYTES": "2000000", "SLUICE_HTTP_MAX_PENDING_BODY_BYTES": "1000000"},
    ],
)
def test_http_limits_out_of_bounds_are_refused(setting: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        Settings(**setting)  # type: ignore[arg-type]
