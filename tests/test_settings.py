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
