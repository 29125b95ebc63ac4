"""Square's two environments, production and the sandbox: each has its own API host, its own
webhook subscriptions and signature keys, and names itself in every delivery's
`square-environment` header (`Production` or `Sandbox`). One deployment takes one of them
(`SQUARE_ENVIRONMENT`), so sandbox events never reach the production tables."""

from __future__ import annotations

from typing import Literal

SquareEnvironment = Literal["production", "sandbox"]

ENVIRONMENT_HEADER = "square-environment"
# As Square spells them in the header.
HEADER_VALUES: dict[SquareEnvironment, str] = {"production": "Production", "sandbox": "Sandbox"}

API_URLS: dict[SquareEnvironment, str] = {
    "production": "https://connect.squareup.com",
    "sandbox": "https://connect.squareupsandbox.com",
}
# Every host of an environment is under its domain (connect., pci-connect., ...).
_DOMAINS: dict[SquareEnvironment, str] = {
    "production": "squareup.com",
    "sandbox": "squareupsandbox.com",
}


def environment_of_host(host: str) -> SquareEnvironment | None:
    """The environment a Square host belongs to; None for any other host (a fake, a proxy)."""
    name = host.lower().rstrip(".")
    for environment, domain in _DOMAINS.items():
        if name == domain or name.endswith("." + domain):
            return environment
    return None


def names_environment(header_value: str, environment: SquareEnvironment) -> bool:
    """Whether a `square-environment` value names `environment`; the case is not significant."""
    return header_value.strip().lower() == environment
