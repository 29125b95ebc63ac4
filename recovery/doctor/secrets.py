"""The doctor's checks of the secrets: the admin and API tokens, and any placeholder value left
from an example (`changeme`, `xxx`, ...), in a token, a key or a password inside a URL."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from pydantic import SecretStr

from recovery.doctor.findings import Finding, fail, ok, warn
from sluice.settings import Settings, is_placeholder

if TYPE_CHECKING:
    from collections.abc import Iterator

# Shorter than this is guessable by anyone who can reach the port.
MIN_TOKEN_LENGTH = 16
_MAKE_ONE = "e.g. `openssl rand -base64 32`"
_EXAMPLE_DOMAINS = ("example.com", "example.org", "example.net", "example.internal", "example")


async def tokens(settings: Settings) -> list[Finding]:
    findings = [
        _token(settings.admin_token, "SLUICE_ADMIN_TOKEN", "`sluice admin` and its console"),
        _token(settings.api_token, "SLUICE_API_TOKEN", "`sluice api`"),
    ]
    admin, api = settings.admin_token, settings.api_token
    if admin is not None and api is not None and admin.get_secret_value() == api.get_secret_value():
        findings.append(
            warn(
                "SLUICE_API_TOKEN",
                "is the admin token: the staff app could run recovery",
                f"give each its own value, {_MAKE_ONE}",
            )
        )
    return findings


def _token(token: SecretStr | None, name: str, serves: str) -> Finding:
    if token is None:
        return warn(
            name, f"is not set: {serves} refuses every request (503)", f"set {name}, {_MAKE_ONE}"
        )
    length = len(token.get_secret_value())
    if length < MIN_TOKEN_LENGTH:
        return warn(name, f"is {length} characters long", f"use at least 16, {_MAKE_ONE}")
    return ok(name, f"set ({length} characters)")


def _secret_values(settings: Settings) -> Iterator[tuple[str, str]]:
    """(setting, value) for every secret value held, a URL's password included."""
    for name, field in Settings.model_fields.items():
        alias = str(field.validation_alias or name)
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            yield alias, value.get_secret_value()
        elif isinstance(value, list):
            yield from ((alias, v.get_secret_value()) for v in value if isinstance(v, SecretStr))
        elif isinstance(value, dict):
            for key, secret in value.items():
                if isinstance(secret, SecretStr):
                    yield alias, str(key)
                    yield alias, secret.get_secret_value()
        elif isinstance(value, str) and "://" in value:
            password = urlsplit(value).password
            if password:
                yield alias, password


def _example_hosts(settings: Settings) -> Iterator[tuple[str, str]]:
    for name, field in Settings.model_fields.items():
        value = getattr(settings, name)
        if not isinstance(value, str):
            continue
        hosts = [urlsplit(value).hostname or ""] if "://" in value else value.split(",")
        for host in hosts:
            bare = host.strip().rsplit(":", 1)[0].lower()
            if any(bare == d or bare.endswith("." + d) for d in _EXAMPLE_DOMAINS):
                yield str(field.validation_alias or name), bare


async def placeholders(settings: Settings) -> list[Finding]:
    bad = sorted({name for name, value in _secret_values(settings) if is_placeholder(value)})
    findings = [
        fail(name, "holds a placeholder value", f"set {name} from your secret manager")
        for name in bad
    ]
    findings.extend(
        warn(name, f"names the example host {host}", f"set {name} to this environment's")
        for name, host in sorted(set(_example_hosts(settings)))
    )
    return findings or [ok("placeholders", "no placeholder secret or example host")]
