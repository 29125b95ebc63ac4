"""Fuzzing the webhook endpoints: generated bodies and headers, hostile content included, and
correctly signed bodies of every shape. Whatever arrives: never a 5xx, and a request that is
refused stores nothing (no event, no outbox row).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devkit.simulate import signed_square_delivery, square_event, square_headers
from devkit.simulate_airtable import airtable_ping, signed_airtable_ping
from ingest.app import create_app
from sluice.settings import Settings
from tests.support.fuzz import Conn, connect, module_database, row_counts, served_in_thread

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.support.services import PostgresCluster

SQUARE_KEY = "fuzz-signature-key"
SQUARE_URL = "https://sluice.example.com/webhooks/square"
HOOK = "achFUZZfuzz000001"
BASE = "appFUZZfuzz000001"
MAC = base64.b64encode(b"f" * 32).decode()
MAX_BODY = 16 * 1024

FUZZ = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# JSON of every kind: unicode (surrogates and NULs excluded only where JSON itself cannot carry
# them), huge and negative numbers, floats, deep nesting.
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**40), max_value=10**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


def deep(depth: int) -> bytes:
    """JSON nested `depth` levels deep (built as text: too deep for json.dumps)."""
    return b'{"a":[' * depth + b'"x"' + b"]}" * depth


hostile_bodies = st.one_of(
    st.binary(max_size=2048),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.integers(min_value=50, max_value=3000).map(deep),
    st.integers(min_value=MAX_BODY - 10, max_value=MAX_BODY * 3).map(lambda n: b"[" * n),
)


def mutated_square_event(draw: st.DrawFn) -> dict[str, Any]:
    """A real Square event with one field replaced by anything, or removed."""
    kind = draw(st.sampled_from(["booking.created", "booking.updated", "customer.updated"]))
    event = square_event(kind, version=draw(st.integers(1, 5)))
    path = draw(
        st.sampled_from(
            [
                ("event_id",),
                ("type",),
                ("merchant_id",),
                ("created_at",),
                ("data",),
                ("data", "id"),
                ("data", "type"),
                ("data", "object"),
                ("data", "object", "booking"),
                ("data", "object", "booking", "version"),
                ("data", "object", "booking", "id"),
                ("data", "object", "customer", "version"),
            ]
        )
    )
    target: Any = event
    for part in path[:-1]:
        target = target.get(part)
        if not isinstance(target, dict):
            return event
    if draw(st.booleans()):
        target.pop(path[-1], None)
    else:
        target[path[-1]] = draw(json_values)
    return event


@st.composite
def signed_hostile_square(draw: st.DrawFn) -> bytes:
    if draw(st.booleans()):
        return json.dumps(mutated_square_event(draw)).encode()
    return draw(hostile_bodies)


@pytest.fixture(scope="module")
def fuzz_db_url(postgres_cluster: PostgresCluster, template_database: str) -> Iterator[str]:
    with module_database(postgres_cluster, template_database) as url:
        yield url


@pytest.fixture(scope="module")
def ingest(fuzz_db_url: str) -> Iterator[httpx.Client]:
    app_settings = Settings(
        DATABASE_URL=fuzz_db_url,
        SQUARE_WEBHOOK_SIGNATURE_KEYS=SQUARE_KEY,
        SQUARE_WEBHOOK_URL=SQUARE_URL,
        AIRTABLE_WEBHOOK_SECRETS=f"{HOOK}={MAC}",
        SLUICE_MAX_BODY_BYTES=MAX_BODY,
    )
    with served_in_thread(create_app(app_settings)) as url, httpx.Client(base_url=url) as http:
        yield http


@pytest.fixture(scope="module")
def fuzz_db(fuzz_db_url: str) -> Iterator[Conn]:
    with connect(fuzz_db_url) as conn:
        yield conn


def post_and_check(
    http: httpx.Client, db: Conn, path: str, body: bytes, headers: dict[str, str]
) -> httpx.Response:
    before = row_counts(db)
    try:
        response = http.post(path, content=body, headers=headers, timeout=30)
    except httpx.RemoteProtocolError:
        # The server may close the connection on a body it refused mid-stream (413).
        assert row_counts(db) == before
        return httpx.Response(413)
    assert response.status_code < 500, (response.status_code, response.text[:300])
    if response.status_code >= 300:
        assert row_counts(db) == before, (response.status_code, response.text[:300])
    return response


# Any value HTTP can carry (the client refuses leading or trailing spaces, so they are cut).
header_values = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=100).map(
    str.strip
) | st.sampled_from(["", "sha256=", "hmac-sha256=", "hmac-sha256=" + "0" * 64])


@pytest.mark.slow
@FUZZ
@given(body=hostile_bodies, signature=header_values, content_type=header_values)
def test_square_unsigned_garbage_is_refused_without_storing(
    ingest: httpx.Client, fuzz_db: Conn, body: bytes, signature: str, content_type: str
) -> None:
    headers = {"x-square-hmacsha256-signature": signature, "content-type": content_type}
    response = post_and_check(ingest, fuzz_db, "/webhooks/square", body, headers)
    # Unsigned: nothing is parsed before the signature check, so never a 400.
    assert response.status_code in (401, 413), response.text[:300]


@pytest.mark.slow
@FUZZ
@given(body=signed_hostile_square(), truncate=st.integers(0, 50))
def test_square_signed_hostile_content_never_5xx(
    ingest: httpx.Client, fuzz_db: Conn, body: bytes, truncate: int
) -> None:
    if truncate and len(body) > truncate:
        body = body[:-truncate]  # truncated, but signed as it is sent
    headers = square_headers(body, key=SQUARE_KEY, url=SQUARE_URL)
    post_and_check(ingest, fuzz_db, "/webhooks/square", body, headers)


@pytest.mark.slow
@FUZZ
@given(body=hostile_bodies, mac=header_values)
def test_airtable_unsigned_garbage_is_refused_without_storing(
    ingest: httpx.Client, fuzz_db: Conn, body: bytes, mac: str
) -> None:
    headers = {"x-airtable-content-mac": mac, "content-type": "application/json"}
    response = post_and_check(ingest, fuzz_db, "/webhooks/airtable", body, headers)
    assert response.status_code in (401, 413), response.text[:300]


@st.composite
def signed_hostile_ping(draw: st.DrawFn) -> bytes:
    ping: Any = airtable_ping(BASE, HOOK)
    choice = draw(st.integers(0, 2))
    if choice == 0:
        field = draw(st.sampled_from(["base", "webhook", "timestamp"]))
        ping[field] = draw(json_values)
    elif choice == 1:
        ping = draw(json_values)
    else:
        return draw(hostile_bodies)
    return json.dumps(ping).encode()


@pytest.mark.slow
@FUZZ
@given(body=signed_hostile_ping())
def test_airtable_signed_hostile_content_never_5xx(
    ingest: httpx.Client, fuzz_db: Conn, body: bytes
) -> None:
    digest = hmac.new(base64.b64decode(MAC), body, hashlib.sha256).hexdigest()
    headers = {"x-airtable-content-mac": f"hmac-sha256={digest}"}
    post_and_check(ingest, fuzz_db, "/webhooks/airtable", body, headers)


def test_fuzz_harness_accepts_valid_deliveries(ingest: httpx.Client, fuzz_db: Conn) -> None:
    """The same client and checks store what is valid: the fuzz tests above can fail."""
    body, headers = signed_square_delivery(
        square_event("booking.created"), key=SQUARE_KEY, url=SQUARE_URL
    )
    before = row_counts(fuzz_db)
    assert post_and_check(ingest, fuzz_db, "/webhooks/square", body, headers).status_code == 200
    assert row_counts(fuzz_db)["inbound_events"] == before["inbound_events"] + 1
    body, headers = signed_airtable_ping(airtable_ping(BASE, HOOK), MAC)
    assert post_and_check(ingest, fuzz_db, "/webhooks/airtable", body, headers).status_code == 200
    assert row_counts(fuzz_db)["outbox"] == before["outbox"] + 2
