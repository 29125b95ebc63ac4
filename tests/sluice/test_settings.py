from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import pytest
from pydantic import ValidationError

from schemas.square_environment import API_URLS
from sluice.settings import AIRTABLE_API_URL, Settings
from tests.support.paths import ROOT

if TYPE_CHECKING:
    from schemas.square_environment import SquareEnvironment


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "SQUARE_WEBHOOK_SIGNATURE_KEYS",
        "SQUARE_WEBHOOK_URL",
        "SLUICE_MAX_BODY_BYTES",
        "SQUARE_ENVIRONMENT",
        "SQUARE_API_URL",
    ):
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


def test_square_environment_is_production_unless_set_and_picks_the_api() -> None:
    assert Settings().square_environment == "production"
    assert Settings().square_endpoint == "https://connect.squareup.com"
    sandbox = Settings(SQUARE_ENVIRONMENT="sandbox")
    assert sandbox.square_environment == "sandbox"
    assert sandbox.square_endpoint == "https://connect.squareupsandbox.com"


@pytest.mark.parametrize("wrong", ["staging", "Production", "SANDBOX", "", "prod"])
def test_square_environment_is_a_closed_set(wrong: str) -> None:
    with pytest.raises(ValidationError, match="SQUARE_ENVIRONMENT") as refused:
        Settings(SQUARE_ENVIRONMENT=wrong)
    assert "'production' or 'sandbox'" in str(refused.value)


@pytest.mark.parametrize("environment", ["production", "sandbox"])
@pytest.mark.parametrize("url", ["http://127.0.0.1:8765/", "https://square-proxy.internal"])
def test_an_explicit_api_url_wins_in_either_environment(environment: str, url: str) -> None:
    settings = Settings(SQUARE_ENVIRONMENT=environment, SQUARE_API_URL=url)
    assert settings.square_endpoint == url.rstrip("/")


@pytest.mark.parametrize(
    ("environment", "url"),
    [
        ("production", "https://connect.squareupsandbox.com"),
        ("production", "https://CONNECT.SquareupSandbox.com./v2"),
        ("production", "https://pci-connect.squareupsandbox.com"),
        ("sandbox", "https://connect.squareup.com"),
        ("sandbox", "https://connect.squareup.com:443/"),
    ],
)
def test_the_other_environments_api_is_refused(environment: str, url: str) -> None:
    with pytest.raises(ValidationError, match="SQUARE_API_URL is Square's") as refused:
        Settings(SQUARE_ENVIRONMENT=environment, SQUARE_API_URL=url)
    assert f"SQUARE_ENVIRONMENT is {environment}" in str(refused.value)


@pytest.mark.parametrize("environment", ["production", "sandbox"])
def test_its_own_environments_api_is_taken(environment: SquareEnvironment) -> None:
    url = API_URLS[environment]
    assert Settings(SQUARE_ENVIRONMENT=environment, SQUARE_API_URL=url).square_endpoint == url


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


def environment_names() -> dict[str, str]:
    """Each setting's one name, its environment variable's, by field."""
    names = {}
    for field_name, info in Settings.model_fields.items():
        assert isinstance(info.validation_alias, str), field_name
        names[field_name] = info.validation_alias
    return names


def test_each_setting_has_one_name_its_environment_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    names = environment_names()
    assert all(name.isupper() for name in names.values())
    monkeypatch.delenv("SLUICE_LOG_LEVEL", raising=False)
    monkeypatch.setenv("MAX_BODY_BYTES", "77")  # the field's own name is not a second one
    monkeypatch.setenv("LOG_LEVEL", "debug")
    assert (Settings().max_body_bytes, Settings().log_level) == (1024 * 1024, "info")
    assert Settings(SLUICE_MAX_BODY_BYTES=77).max_body_bytes == 77


@pytest.mark.parametrize(
    ("setting", "allowed"),
    [
        ("SLUICE_LOG_FORMAT", ["auto", "json", "console"]),
        ("SLUICE_LOG_LEVEL", ["debug", "info", "warning", "error"]),
    ],
)
def test_log_format_and_level_are_closed_sets(setting: str, allowed: list[str]) -> None:
    field = {v: k for k, v in environment_names().items()}[setting]
    for value in allowed:
        given: dict[str, Any] = {setting: value}
        assert getattr(Settings(**given), field) == value
    for wrong in ("JSON", "verbose", "", "info "):
        refused: dict[str, Any] = {setting: wrong}
        with pytest.raises(ValidationError):
            Settings(**refused)


def readme_settings() -> dict[str, str]:
    """The README's Settings table: each variable's default as written (the first code span,
    or "—" when there is none)."""
    readme = (ROOT / "README.md").read_text()
    table = readme.split("\n## Settings\n", 1)[1].split("\n## ", 1)[0]
    defaults = {}
    for line in table.splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if len(cells) != 3 or not cells[0].startswith("`"):
            continue
        default = "—" if cells[1].startswith("—") else cells[1].split("`")[1]
        for name in re.findall(r"`([A-Z_]+)`", cells[0]):
            defaults[name] = default
    return defaults


def shown(value: object) -> str:
    if value is None or value in ([], {}):
        return "—"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def test_the_readme_lists_every_setting_with_its_default() -> None:
    documented = readme_settings()
    defaults = Settings.model_construct()  # the declared defaults, no environment
    # Unset, the Airtable client talks to Airtable itself.
    # Unset, the Square reader talks to the default environment's API.
    effective = {"AIRTABLE_API_URL": AIRTABLE_API_URL, "SQUARE_API_URL": API_URLS["production"]}
    for field_name, name in environment_names().items():
        assert name in documented, name
        expected = effective.get(name, shown(getattr(defaults, field_name)))
        assert documented[name] == expected, name


@pytest.mark.parametrize("days", ["1", "27", "3651", "-1"])
def test_an_event_retention_shorter_than_squares_event_search_is_refused(days: str) -> None:
    with pytest.raises(ValidationError, match="28 to 3650 days, or 0"):
        Settings(SLUICE_EVENT_RETENTION_DAYS=days)


@pytest.mark.parametrize(("days", "kept"), [("0", 0), ("28", 28), ("365", 365)])
def test_an_event_retention_of_zero_or_28_days_and_more_is_taken(days: str, kept: int) -> None:
    assert Settings(SLUICE_EVENT_RETENTION_DAYS=days).event_retention_days == kept
