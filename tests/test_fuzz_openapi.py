"""Fuzzing every HTTP endpoint from its OpenAPI document with schemathesis: the App API
(`GET /api/openapi.json`, served by the API itself) and ingest + admin
(`schemas/contracts/openapi.json`). Valid and invalid requests alike, with and without the
bearer token: never a 5xx, and a refused request writes no rows.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from api.app import create_api_app
from ingest.app import create_app
from recovery.admin import create_admin_app
from sluice.fakes.airtable import FakeAirtable, add_leads_table
from sluice.fakes.square import FakeSquare
from sluice.settings import Settings
from tests.api_helpers import API_TOKEN, insert_job, insert_lead
from tests.fuzz_helpers import Conn, connect, module_database, row_counts, served_in_thread

if TYPE_CHECKING:
    from collections.abc import Iterator

    from schemathesis import Case

    from tests.services import PostgresCluster

CONTRACTS = Path(__file__).resolve().parent.parent / "schemas" / "contracts"
ADMIN_TOKEN = "fuzz-admin-token-0123456789"  # noqa: S105 - a test value
# Server-Sent Events never end: the change stream is not a request/response endpoint.
STREAMING = {"/api/changes"}
EXAMPLES = 50


@pytest.fixture(scope="module")
def fuzz_db_url(postgres_cluster: PostgresCluster, template_database: str) -> Iterator[str]:
    with module_database(postgres_cluster, template_database) as url:
        yield url


@pytest.fixture(scope="module")
def fuzz_db(fuzz_db_url: str) -> Iterator[Conn]:
    with connect(fuzz_db_url) as conn:
        # Rows the generated ids can land on, besides the many that do not exist.
        insert_job(conn)
        insert_lead(conn)
        yield conn


@pytest.fixture(scope="module")
def api_url(fuzz_db_url: str) -> Iterator[str]:
    app = create_api_app(Settings(DATABASE_URL=fuzz_db_url, SLUICE_API_TOKEN=API_TOKEN))
    with served_in_thread(app) as url:
        yield url


@pytest.fixture(scope="module")
def ingest_and_admin(fuzz_db_url: str) -> Iterator[tuple[str, str]]:
    fake = FakeSquare()
    fake.add_booking(datetime.now(UTC) + timedelta(hours=2))
    # The base of the lead in fuzz_db, for the Airtable reconcile's sweep.
    airtable = FakeAirtable()
    add_leads_table(airtable, airtable.add_base(base_id="appTEST").id)
    with (
        served_in_thread(fake.app) as square_url,
        served_in_thread(airtable.app) as airtable_url,
    ):
        app_settings = Settings(
            DATABASE_URL=fuzz_db_url,
            SQUARE_WEBHOOK_SIGNATURE_KEYS="fuzz-signature-key",
            SQUARE_WEBHOOK_URL="https://sluice.example.com/webhooks/square",
            AIRTABLE_WEBHOOK_SECRETS="achFUZZfuzz000001=ZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmY=",
            AIRTABLE_API_URL=airtable_url,
            AIRTABLE_API_KEY=airtable.token,
            SQUARE_API_URL=square_url,
            SQUARE_ACCESS_TOKEN=fake.token,
            SLUICE_ADMIN_TOKEN=ADMIN_TOKEN,
        )
        with (
            served_in_thread(create_app(app_settings)) as ingest,
            served_in_thread(create_admin_app(app_settings)) as admin,
        ):
            yield ingest, admin


FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)


def operations(raw: dict[str, Any]) -> list[Any]:
    schema = schemathesis.openapi.from_dict(raw)
    found = [result.ok() for result in schema.get_all_operations()]
    return [op for op in found if op.path not in STREAMING]


def cases(raw: dict[str, Any], token: str) -> st.SearchStrategy[Case]:
    """Valid and invalid requests to every operation; the right token on most of them."""
    strategies = [
        op.as_strategy(generation_mode=mode)
        for op in operations(raw)
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    ]
    return st.one_of(strategies)


def call_and_check(case: Case, base_url: str, db: Conn, auth: dict[str, str]) -> int:
    before = row_counts(db)
    # Our token wins over one schemathesis generated from the security scheme; without ours,
    # whatever it generated is sent.
    headers = {**(case.headers or {}), **auth}
    response = case.call(base_url=base_url, headers=headers, timeout=30)
    assert response.status_code < 500, (case.method, case.path, response.text[:300])
    if response.status_code >= 300:
        assert row_counts(db) == before, (case.method, case.path, response.status_code)
    return int(response.status_code)


@pytest.mark.slow
def test_app_api_never_5xx_and_refusals_write_nothing(api_url: str, fuzz_db: Conn) -> None:
    raw = httpx.get(f"{api_url}/api/openapi.json", timeout=10).json()
    assert any(path.startswith("/api/jobs") for path in raw["paths"])
    auth = st.sampled_from([{"Authorization": f"Bearer {API_TOKEN}"}] * 3 + [{}])

    @FUZZ
    @given(case=cases(raw, API_TOKEN), auth=auth)
    def run(case: Case, auth: dict[str, str]) -> None:
        seen.add(call_and_check(case, api_url, fuzz_db, auth))

    seen: set[int] = set()
    run()
    # The requests reached the handlers: some were served, some refused for their content.
    assert 200 in seen
    assert seen & {400, 404, 409, 422}, seen


@pytest.mark.slow
def test_ingest_and_admin_never_5xx_and_refusals_write_nothing(
    ingest_and_admin: tuple[str, str], fuzz_db: Conn
) -> None:
    ingest_url, admin_url = ingest_and_admin
    raw = json.loads((CONTRACTS / "openapi.json").read_text())
    auth = st.sampled_from([{"Authorization": f"Bearer {ADMIN_TOKEN}"}, {}])

    @FUZZ
    @given(case=cases(raw, ADMIN_TOKEN), auth=auth)
    def run(case: Case, auth: dict[str, str]) -> None:
        base = admin_url if case.path.startswith("/admin/") else ingest_url
        seen.add(call_and_check(case, base, fuzz_db, auth))

    seen: set[int] = set()
    run()
    assert 200 in seen
    assert 401 in seen
