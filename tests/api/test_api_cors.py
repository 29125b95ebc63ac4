"""Browser clients on other origins: CORS for the configured origins only, preflight included,
credentials never allowed (the API takes a bearer token, not cookies). A real server."""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx
import pytest
from pydantic import ValidationError

from sluice.settings import Settings
from tests.support.api import AUTH, api_client, insert_job

if TYPE_CHECKING:
    from tests.support.api import Conn

STAFF = "https://staff.example.com"


def preflight(origin: str, method: str = "PATCH") -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "authorization, x-idempotency-key, if-match",
    }


async def test_a_configured_origin_gets_its_preflight_and_reads_the_etag(
    database_url: str, db: Conn
) -> None:
    job = insert_job(db)
    async with api_client(
        database_url, SLUICE_API_CORS_ORIGINS=f"{STAFF}, https://portal.example.com"
    ) as api:
        bare = httpx.AsyncClient(base_url=str(api.base_url))
        async with bare:
            allowed = await bare.options(f"/api/jobs/{job}", headers=preflight(STAFF))
            refused = await bare.options(
                f"/api/jobs/{job}", headers=preflight("https://evil.example")
            )
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == STAFF
        asked = allowed.headers["access-control-allow-headers"].lower()
        for name in ("authorization", "x-idempotency-key", "if-match"):
            assert name in asked
        assert "PATCH" in allowed.headers["access-control-allow-methods"]
        assert "access-control-allow-credentials" not in allowed.headers
        assert refused.status_code == 400
        assert "access-control-allow-origin" not in refused.headers
        read = await api.get(f"/api/jobs/{job}", headers={"Origin": STAFF})
        assert read.status_code == 200
        assert read.headers["access-control-allow-origin"] == STAFF
        assert "etag" in read.headers["access-control-expose-headers"].lower()
        other = await api.get(f"/api/jobs/{job}", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers
        # The token is still required: CORS lets a browser ask, not skip the bearer check.
        async with httpx.AsyncClient(base_url=str(api.base_url)) as anonymous:
            stranger = await anonymous.get(f"/api/jobs/{job}", headers={"Origin": STAFF})
        assert stranger.status_code == 401


async def test_a_wildcard_never_comes_with_credentials(database_url: str, db: Conn) -> None:
    job = insert_job(db)
    async with api_client(database_url, SLUICE_API_CORS_ORIGINS="*") as api:
        read = await api.get(f"/api/jobs/{job}", headers={"Origin": "https://any.example"})
    assert read.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in read.headers


async def test_no_origins_configured_means_no_cors(database_url: str, db: Conn) -> None:
    job = insert_job(db)
    async with api_client(database_url) as api:
        read = await api.get(f"/api/jobs/{job}", headers={"Origin": STAFF})
        asked = await api.options(f"/api/jobs/{job}", headers={**preflight(STAFF), **AUTH})
    assert "access-control-allow-origin" not in read.headers
    assert "access-control-allow-origin" not in asked.headers
    assert asked.status_code == 405


def test_an_origin_is_a_scheme_and_a_host_only() -> None:
    for bad in ("staff.example.com", "https://staff.example.com/app", "ftp://x.example"):
        with pytest.raises(ValidationError, match="not an origin"):
            Settings(SLUICE_API_CORS_ORIGINS=bad)
    both = Settings(SLUICE_API_CORS_ORIGINS="https://a.example, http://localhost:5173")
    assert both.api_cors_origins == ["https://a.example", "http://localhost:5173"]
