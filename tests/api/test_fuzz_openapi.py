"""Fuzzing every HTTP endpoint from its OpenAPI document with schemathesis: the App API
(`GET /api/openapi.json`, served by the API itself) and ingest + admin
(`schemas/contracts/openapi.json`). Valid and invalid requests alike, with and without the
bearer token: never a 5xx, and a refused request writes no rows. The change stream is fuzzed
too: its answer is read only when it is not the endless stream.

Then every query parameter the documents describe, one at a time, with hypothesis: values
holding a NUL, over the documented length, huge numbers, repeats and anything else. A NUL or a
repeat must be a 400 naming the parameter (which also shows the endpoint reads every parameter
its document lists); nothing may be a 5xx.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.core.result import Err

from api.app import create_api_app
from devkit.fakes.airtable import FakeAirtable, add_leads_table
from devkit.fakes.square import FakeSquare
from ingest.app import create_app
from recovery.admin import create_admin_app
from sluice.settings import Settings
from tests.support.api import API_TOKEN, insert_job, insert_lead
from tests.support.fuzz import Conn, connect, module_database, row_counts, served_in_thread
from tests.support.paths import ROOT

if TYPE_CHECKING:
    from collections.abc import Iterator

    from schemathesis import Case

    from tests.support.services import PostgresCluster

CONTRACTS = ROOT / "schemas" / "contracts"
ADMIN_TOKEN = "fuzz-admin-token-0123456789"  # noqa: S105 - a test value
# Server-Sent Events never end: a stream that is answered 200 is closed unread.
STREAMING = {"/api/changes"}
EXAMPLES = 50
QUERY_EXAMPLES = 150


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
    found = []
    for result in schema.get_all_operations():
        if isinstance(result, Err):
            raise result.err()  # an operation schemathesis cannot read is a broken document
        found.append(result.ok())
    return found


def cases(raw: dict[str, Any], token: str) -> st.SearchStrategy[Case[Any]]:
    """Valid and invalid requests to every operation; the right token on most of them."""
    strategies = [
        op.as_strategy(generation_mode=mode)
        for op in operations(raw)
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    ]
    return st.one_of(strategies)


def call_streaming(case: Case[Any], base_url: str, headers: dict[str, str]) -> tuple[int, str]:
    """Send a generated request as schemathesis would, reading the answer only when it is not
    the endless stream."""
    request = case.as_transport_kwargs(base_url=base_url, headers=headers)
    with requests.request(**request, stream=True, timeout=30) as response:
        text = "" if response.status_code == 200 else response.text
        return response.status_code, text


def call_and_check(case: Case[Any], base_url: str, db: Conn, auth: dict[str, str]) -> int:
    before = row_counts(db)
    # Our token wins over one schemathesis generated from the security scheme; without ours,
    # whatever it generated is sent.
    headers = {**dict(case.headers or {}), **auth}
    if case.path in STREAMING:
        status, text = call_streaming(case, base_url, headers)
    else:
        response = case.call(base_url=base_url, headers=headers, timeout=30)
        status, text = response.status_code, response.text
    assert status < 500, (case.method, case.path, case.query, text[:300])
    if status >= 300:
        assert row_counts(db) == before, (case.method, case.path, case.query, status)
    return int(status)


@pytest.mark.slow
def test_app_api_never_5xx_and_refusals_write_nothing(api_url: str, fuzz_db: Conn) -> None:
    raw = httpx.get(f"{api_url}/api/openapi.json", timeout=10).json()
    assert any(path.startswith("/api/jobs") for path in raw["paths"])
    auth = st.sampled_from([{"Authorization": f"Bearer {API_TOKEN}"}] * 3 + [{}])

    # Query parameters are documented, so generated requests carry them (hostile values of each
    # are sent deterministically by test_app_api_query_parameters_refuse_hostile_values).
    assert {param["name"] for _, _, param in query_parameters(raw)} >= {
        "from",
        "to",
        "limit",
        "claimed_by",
        "cursor",
        "location",
        "work_status",
        "sync_status",
        "conflict",
        "entity",
        "key",
    }
    # And the headers a change takes: If-Match with the idempotency key.
    headers = {
        p["name"]
        for item in raw["paths"].values()
        for op in item.values()
        for p in op.get("parameters", [])
        if p["in"] == "header"
    }
    assert {"If-Match", "X-Idempotency-Key", "If-None-Match", "Last-Event-ID"} <= headers

    @FUZZ
    @given(case=cases(raw, API_TOKEN), auth=auth)
    def run(case: Case[Any], auth: dict[str, str]) -> None:
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
    def run(case: Case[Any], auth: dict[str, str]) -> None:
        base = admin_url if case.path.startswith("/admin/") else ingest_url
        seen.add(call_and_check(case, base, fuzz_db, auth))

    seen: set[int] = set()
    run()
    assert 200 in seen
    assert 401 in seen


def query_parameters(raw: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(method, path, parameter) for every query parameter a document describes."""
    return [
        (method.upper(), path, parameter)
        for path, methods in raw["paths"].items()
        for method, operation in methods.items()
        for parameter in operation.get("parameters", [])
        if parameter["in"] == "query"
    ]


# Integers past the length where int() refuses to convert them (str() of such an int would too).
HUGE_DIGITS = st.text("0123456789", min_size=4301, max_size=5000)


def hostile_values(schema: dict[str, Any]) -> st.SearchStrategy[str]:
    """What a client could put in a query parameter of this schema, and then some."""
    longest = schema.get("maxLength", 20 if schema.get("type") == "integer" else 200)
    highest = schema.get("maximum", 0)
    return st.one_of(
        st.text(),
        st.text(min_size=longest + 1, max_size=longest + 40),
        st.integers(min_value=highest + 1).map(str),
        HUGE_DIGITS,
        st.integers(max_value=schema.get("minimum", 0) - 1).map(str),
        st.sampled_from(["", " 1", "1e400", "NaN", "-0", "0x10", "1_0", "\u0663", "true "]),
    )


@st.composite
def query_cases(draw: st.DrawFn, raw: dict[str, Any]) -> tuple[str, str, str, list[Any]]:
    method, path, parameter = draw(st.sampled_from(query_parameters(raw)))
    name = parameter["name"]
    values = hostile_values(parameter["schema"])
    kind = draw(st.sampled_from(["nul", "repeated", "other"]))
    if kind == "nul":
        before, after = draw(values), draw(st.text(max_size=5))
        pairs = [(name, f"{before[:10]}\x00{after}")]
    elif kind == "repeated":
        pairs = [(name, draw(values)), (name, draw(values))]
    else:
        pairs = [(name, draw(values))]
    return method, path, name, pairs


def send_query(
    method: str, url: str, pairs: list[Any], headers: dict[str, Any]
) -> tuple[int, dict[str, Any]]:
    with httpx.stream(method, url, params=pairs, headers=headers, timeout=30) as response:
        if response.status_code == 200 and url.endswith(tuple(STREAMING)):
            return 200, {}
        response.read()
        is_json = response.headers.get("content-type", "").startswith("application/json")
        return response.status_code, response.json() if is_json else {}


def check_query_case(
    case: tuple[str, str, str, list[Any]], base_url: str, db: Conn, token: str
) -> int:
    method, path, name, pairs = case
    url = base_url + path.replace("{source}", "airtable")
    before = row_counts(db)
    status, problem = send_query(method, url, pairs, {"Authorization": f"Bearer {token}"})
    assert status < 500, (path, pairs, problem)
    if len(pairs) > 1 or "\x00" in pairs[0][1]:
        assert status == 400, (path, pairs, problem)
        assert problem["detail"].startswith(f"{name}: "), (path, pairs, problem)
        assert problem.get("parameter", name) == name
    if status >= 300:
        assert row_counts(db) == before, (path, pairs, status)
    return status


@pytest.mark.slow
def test_app_api_query_parameters_refuse_hostile_values(api_url: str, fuzz_db: Conn) -> None:
    raw = httpx.get(f"{api_url}/api/openapi.json", timeout=10).json()
    documented = {(path, p["name"]) for _, path, p in query_parameters(raw)}
    assert {("/api/jobs", "limit"), ("/api/leads", "claimed_by")} <= documented
    assert ("/api/changes", "last_event_id") in documented

    @settings(max_examples=QUERY_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
    @given(case=query_cases(raw))
    def run(case: tuple[str, str, str, list[Any]]) -> None:
        seen.add(check_query_case(case, api_url, fuzz_db, API_TOKEN))

    seen: set[int] = set()
    run()
    assert 400 in seen


@pytest.mark.slow
def test_admin_query_parameters_refuse_hostile_values(
    ingest_and_admin: tuple[str, str], fuzz_db: Conn
) -> None:
    _, admin_url = ingest_and_admin
    raw = json.loads((CONTRACTS / "openapi.json").read_text())
    documented = {p["name"] for _, _, p in query_parameters(raw)}
    expected = {"from", "to", "ahead", "since", "lookback_minutes", "full", "entity", "limit"}
    assert documented == expected

    @settings(max_examples=QUERY_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
    @given(case=query_cases(raw))
    def run(case: tuple[str, str, str, list[Any]]) -> None:
        seen.add(check_query_case(case, admin_url, fuzz_db, ADMIN_TOKEN))

    seen: set[int] = set()
    run()
    assert 400 in seen


# Header values a client can send: Latin-1 without control characters, and no whitespace around
# the value (the HTTP client refuses that; a server would drop it).
header_text = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f")
).map(lambda value: value.strip(" \t"))


@pytest.mark.slow
def test_the_last_event_id_header_is_resumed_from_or_refused(api_url: str) -> None:
    @settings(max_examples=QUERY_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
    @given(
        value=header_text | st.integers(min_value=-(2**70), max_value=2**70).map(str) | HUGE_DIGITS
    )
    def run(value: str) -> None:
        headers = {"Authorization": f"Bearer {API_TOKEN}", "Last-Event-ID": value.encode("latin-1")}
        status, problem = send_query("GET", f"{api_url}/api/changes", [], headers)
        whole = re.fullmatch(r"-?[0-9]{1,19}", value) is not None
        resumable = value == "" or (whole and 0 <= int(value) < 2**63)
        assert status == (200 if resumable else 400), (value, problem)
        if status == 400:
            assert problem["error"] == "bad_header"
            assert problem["parameter"] == "Last-Event-ID"

    run()
