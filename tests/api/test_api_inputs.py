"""Every bad input to the App API is answered with a 4xx problem that says what is wrong, never a
5xx, and writes nothing: query parameters, the Last-Event-ID header, path ids and bodies."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest

from tests.support.api import api_client, insert_job, insert_lead, key, written

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import httpx

    from tests.support.api import Conn

BIGINT_MAX = 2**63 - 1
LIMIT_PROBLEM = "limit: must be a whole number from 1 to 1000"
EVENT_ID_PROBLEM = f"must be a whole number from 0 to {BIGINT_MAX}"


@pytest.fixture
async def api(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(database_url) as client:
        yield client


@dataclass(frozen=True, slots=True)
class Rows:
    """A job and a lead a request could change, and the connection to look at them."""

    db: Conn
    job: str
    lead: str

    def written(self) -> dict[str, list[tuple[Any, ...]]]:
        return written(self.db)


@pytest.fixture
def rows(db: Conn) -> Rows:
    return Rows(db, insert_job(db), insert_lead(db))


async def stream_status(
    api: httpx.AsyncClient, path: str, headers: list[tuple[str, str]] | None = None
) -> httpx.Response:
    """The answer to a change-stream request: read when refused, closed at once when streaming
    (a stream never ends)."""
    async with api.stream("GET", path, headers=headers) as response:
        if response.status_code != 200:
            await response.aread()
        return response


async def get(api: httpx.AsyncClient, path: str) -> httpx.Response:
    """GET a path with its query string exactly as written (percent escapes included)."""
    if path.startswith("/api/changes"):
        return await stream_status(api, path)
    return await api.get(path)


def assert_problem(response: httpx.Response, status: int, error: str, detail: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == error, body
    assert body["detail"] == detail, body


# Every query parameter of every endpoint.
QUERY_PARAMETERS = [
    ("/api/jobs", "from", "2030-01-01"),
    ("/api/jobs", "to", "2030-01-01T00:00:00Z"),
    ("/api/jobs", "limit", "5"),
    ("/api/leads", "claimed_by", "amy"),
    ("/api/leads", "include_deleted", "true"),
    ("/api/leads", "limit", "5"),
    ("/api/changes", "last_event_id", "1"),
]


@pytest.mark.parametrize(("path", "name", "good"), QUERY_PARAMETERS)
async def test_a_nul_in_any_query_parameter_is_400_naming_it(
    api: httpx.AsyncClient, rows: Rows, path: str, name: str, good: str
) -> None:
    before = rows.written()
    for value in ("%00", f"{good}%00", f"a%00{good}"):
        response = await get(api, f"{path}?{name}={value}")
        assert_problem(
            response, 400, "bad_query", f"{name}: cannot contain the NUL character (\\u0000)"
        )
        assert response.json()["parameter"] == name
    assert rows.written() == before


async def test_the_nul_in_claimed_by_that_was_a_500(api: httpx.AsyncClient) -> None:
    response = await api.get("/api/leads?claimed_by=a%00b")
    assert_problem(
        response, 400, "bad_query", "claimed_by: cannot contain the NUL character (\\u0000)"
    )


@pytest.mark.parametrize(("path", "name", "good"), QUERY_PARAMETERS)
async def test_a_repeated_query_parameter_is_400(
    api: httpx.AsyncClient, rows: Rows, path: str, name: str, good: str
) -> None:
    response = await get(api, f"{path}?{name}={good}&{name}={good}")
    assert_problem(response, 400, "bad_query", f"{name}: give it once, not 2 times")


@pytest.mark.parametrize(
    ("query", "detail"),
    [
        ("limit=99999999999999999999", LIMIT_PROBLEM),
        ("limit=" + "9" * 5000, LIMIT_PROBLEM),
        ("limit=0", LIMIT_PROBLEM),
        ("limit=1001", LIMIT_PROBLEM),
        ("limit=-1", LIMIT_PROBLEM),
        ("limit=1.5", LIMIT_PROBLEM),
        ("limit=1e3", LIMIT_PROBLEM),
        ("limit=", LIMIT_PROBLEM),
        ("limit=%20%205", LIMIT_PROBLEM),
        ("limit=%D9%A3", LIMIT_PROBLEM),  # an Arabic-Indic three: int() would take it
        ("limit=%C2%B2", LIMIT_PROBLEM),  # a superscript two
        ("from=2030-13-01", "from: not an ISO 8601 date or date-time"),
        ("from=99999-01-01", "from: not an ISO 8601 date or date-time"),
        ("to=2030-02-30", "to: not an ISO 8601 date or date-time"),
        ("to=yesterday", "to: not an ISO 8601 date or date-time"),
        ("from=2030-01-01T00:00:00", "from: a date-time needs a time zone"),
        ("from=0001-01-01T00:00:00%2B14:00", "from: outside the years 1 to 9999 in UTC"),
        ("to=9999-12-31T23:59:59-14:00", "to: outside the years 1 to 9999 in UTC"),
        ("from=" + "2" * 65, "from: must be at most 64 characters"),
    ],
)
async def test_bad_job_windows_and_limits_are_400(
    api: httpx.AsyncClient, rows: Rows, query: str, detail: str
) -> None:
    before = rows.written()
    assert_problem(await api.get(f"/api/jobs?{query}"), 400, "bad_query", detail)
    assert rows.written() == before


@pytest.mark.parametrize(
    ("query", "detail"),
    [
        ("limit=99999999999999999999", LIMIT_PROBLEM),
        ("limit=" + "1" * 5000, LIMIT_PROBLEM),
        ("claimed_by=" + "a" * 201, "claimed_by: must be 1 to 200 characters"),
        ("claimed_by=", "claimed_by: must be 1 to 200 characters"),
        ("include_deleted=maybe", "include_deleted: must be true or false"),
        ("include_deleted=", "include_deleted: must be true or false"),
        ("include_deleted=" + "t" * 5000, "include_deleted: must be true or false"),
    ],
)
async def test_bad_lead_filters_are_400(
    api: httpx.AsyncClient, rows: Rows, query: str, detail: str
) -> None:
    assert_problem(await api.get(f"/api/leads?{query}"), 400, "bad_query", detail)


async def test_good_query_values_still_work(api: httpx.AsyncClient, db: Conn) -> None:
    lead = insert_lead(db)
    gone = insert_lead(db)
    db.execute("UPDATE leads SET claimed_by = %s WHERE record_id = %s", ("a" * 200, lead))
    db.execute("UPDATE leads SET deleted_at = now() WHERE record_id = %s", (gone,))
    claimed = await api.get("/api/leads", params={"claimed_by": "a" * 200, "limit": "1000"})
    assert [row["record_id"] for row in claimed.json()["leads"]] == [lead]
    for value, listed in (("true", 2), ("FALSE", 1), ("1", 2), ("no", 1), ("Yes", 2), ("0", 1)):
        response = await api.get("/api/leads", params={"include_deleted": value})
        assert len(response.json()["leads"]) == listed, value
    window = {"from": "2030-01-01", "to": "2030-01-02T00:00:00+14:00", "limit": "1"}
    assert (await api.get("/api/jobs", params=window)).status_code == 200
    assert (await api.get("/api/jobs", params={"from": "", "to": ""})).status_code == 200


BAD_EVENT_IDS = ["abc", "9" * 5000, "1" * 21, str(BIGINT_MAX + 1), "-1", "1.0", "0x10", "1_0"]


@pytest.mark.parametrize("value", [*BAD_EVENT_IDS, "%201", "%D9%A3"])
async def test_bad_event_ids_to_resume_from_are_400(api: httpx.AsyncClient, value: str) -> None:
    response = await stream_status(api, f"/api/changes?last_event_id={value}")
    assert_problem(response, 400, "bad_query", f"last_event_id: {EVENT_ID_PROBLEM}")


@pytest.mark.parametrize("value", BAD_EVENT_IDS)
async def test_bad_last_event_id_headers_are_400(api: httpx.AsyncClient, value: str) -> None:
    response = await stream_status(api, "/api/changes", [("Last-Event-ID", value)])
    assert_problem(response, 400, "bad_header", f"Last-Event-ID: {EVENT_ID_PROBLEM}")
    assert response.json()["parameter"] == "Last-Event-ID"


async def test_a_repeated_last_event_id_header_is_400(api: httpx.AsyncClient) -> None:
    repeated = [("Last-Event-ID", "1"), ("Last-Event-ID", "2")]
    response = await stream_status(api, "/api/changes", repeated)
    assert_problem(response, 400, "bad_header", "Last-Event-ID: give it once, not 2 times")


async def test_a_good_last_event_id_still_resumes(api: httpx.AsyncClient) -> None:
    for headers, path in (
        ([("Last-Event-ID", str(BIGINT_MAX))], "/api/changes"),
        ([], f"/api/changes?last_event_id={BIGINT_MAX}"),
        ([], "/api/changes?last_event_id=0"),
        ([("Last-Event-ID", "")], "/api/changes?last_event_id="),
    ):
        async with api.stream("GET", path, headers=headers) as stream:
            assert stream.status_code == 200, path
            first = await anext(stream.aiter_lines())
            assert first.startswith("retry:")


async def test_a_nul_in_a_header_is_refused_by_the_server(api: httpx.AsyncClient) -> None:
    # No HTTP client sends it; the protocol parser refuses it before the app sees it.
    address = urlsplit(str(api.base_url))
    assert address.hostname is not None
    assert address.port is not None
    reader, writer = await asyncio.open_connection(address.hostname, address.port)
    writer.write(
        b"GET /api/changes HTTP/1.1\r\nHost: x\r\nLast-Event-ID: 1\x002\r\n"
        b"Connection: close\r\n\r\n"
    )
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), 10)
    writer.close()
    assert status_line.split()[1] == b"400"


async def test_ids_in_the_path_that_cannot_exist_are_404(
    api: httpx.AsyncClient, rows: Rows
) -> None:
    before = rows.written()
    for path in ("/api/jobs/", "/api/leads/"):
        for bad in ("a%00b", "%00", "9" * 5000, "1e400", "-0"):
            response = await api.get(f"{path}{bad}")
            assert_problem(response, 404, "not_found", f"no such {path.split('/')[2][:-1]}")
    patch = await api.patch(
        "/api/jobs/" + "9" * 5000,
        json={"actor": "amy", "notes": "x"},
        headers={"X-Idempotency-Key": key()},
    )
    assert_problem(patch, 404, "not_found", "no such job")
    after = rows.written()
    # A 404 to a change is an answer, kept with its key and replayed (see test_api.py).
    assert len(after.pop("idempotency_keys")) == len(before.pop("idempotency_keys")) + 1
    assert after == before


def nested(depth: int, leaf: bytes = b'"x"') -> bytes:
    """`{"actor": "amy", "notes": [[...leaf...]]}`, arrays and objects `depth` levels deep."""
    return b'{"actor":"amy","notes":' + b"[" * (depth - 1) + leaf + b"]" * (depth - 1) + b"}"


def writes(job: str, lead: str) -> list[tuple[str, str]]:
    return [
        ("PATCH", f"/api/jobs/{job}"),
        ("POST", "/api/jobs/status"),
        ("PATCH", f"/api/leads/{lead}"),
        ("POST", f"/api/leads/{lead}/claim"),
        ("POST", f"/api/leads/{lead}/unclaim"),
    ]


async def send(api: httpx.AsyncClient, method: str, path: str, body: bytes) -> httpx.Response:
    headers = {"X-Idempotency-Key": key(), "Content-Type": "application/json"}
    return await api.request(method, path, content=body, headers=headers)


@pytest.mark.parametrize("depth", [33, 400, 5000, 200_000])
async def test_bodies_nested_deeper_than_32_levels_are_422_before_parsing(
    api: httpx.AsyncClient, rows: Rows, depth: int
) -> None:
    before = rows.written()
    for method, path in writes(rows.job, rows.lead):
        for leaf in (b'"x"', b'"\\u0000"', b"1" * 5000):
            response = await send(api, method, path, nested(depth, leaf))
            assert_problem(
                response, 422, "too_deep", "the body nests arrays and objects deeper than 32 levels"
            )
    assert rows.written() == before


async def test_a_body_nested_32_levels_is_parsed_and_validated(
    api: httpx.AsyncClient, rows: Rows
) -> None:
    before = rows.written()
    response = await send(api, "PATCH", f"/api/jobs/{rows.job}", nested(32))
    assert response.status_code == 422
    assert response.json()["error"] == "invalid_body"
    assert response.json()["errors"] == [
        {"field": "notes", "message": "Input should be a valid string"}
    ]
    nul = await send(api, "PATCH", f"/api/jobs/{rows.job}", nested(32, b'"\\u0000"'))
    assert_problem(nul, 422, "invalid_body", "strings cannot contain the NUL character (\\u0000)")
    assert rows.written() == before


Problem = tuple[int, str, str]
NUMBER_TOO_LONG: Problem = (
    422,
    "number_too_long",
    "numbers in the body are limited to 100 characters",
)
NOT_A_NUMBER: Problem = (400, "invalid_json", "the body is not JSON: NaN and Infinity are not JSON")
NUL: Problem = (422, "invalid_body", "strings cannot contain the NUL character (\\u0000)")


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (
            b'{"actor":"amy","payment":{"method":"cash","amount_cents":' + b"9" * 5000 + b"}}",
            NUMBER_TOO_LONG,
        ),
        (b'{"actor":"amy","notes":"x","n":-' + b"1" * 100 + b"}", NUMBER_TOO_LONG),
        (b'{"actor":"amy","notes":"x","n":0.' + b"1" * 99 + b"}", NUMBER_TOO_LONG),
        (b'{"actor":"amy","notes":"x","n":1e' + b"0" * 99 + b"}", NUMBER_TOO_LONG),
        (b'{"actor":"amy","payment":{"method":"cash","amount_cents":NaN}}', NOT_A_NUMBER),
        (b'{"actor":"amy","notes":-Infinity}', NOT_A_NUMBER),
        (
            b'{"actor":"amy"',
            (
                400,
                "invalid_json",
                "the body is not JSON: Expecting ',' delimiter: line 1 column 15 (char 14)",
            ),
        ),
        (
            b"[" * 40,
            (422, "too_deep", "the body nests arrays and objects deeper than 32 levels"),
        ),
        (b'{"actor":"amy","notes":"\\u0000"}', NUL),
        (b'{"actor":"amy","notes":"x","\\u0000":1}', NUL),
    ],
)
async def test_numbers_and_literals_the_body_cannot_hold(
    api: httpx.AsyncClient, rows: Rows, body: bytes, problem: Problem
) -> None:
    before = rows.written()
    assert_problem(await send(api, "PATCH", f"/api/jobs/{rows.job}", body), *problem)
    assert rows.written() == before


async def test_huge_numbers_in_range_of_the_parser_are_refused_by_the_field(
    api: httpx.AsyncClient, rows: Rows
) -> None:
    before = rows.written()
    for amount, message in (
        (b"1e400", "Input should be a finite number"),
        (b"99999999999999999999", "Input should be less than or equal to 100000000"),
        (b"-1", "Input should be greater than or equal to 0"),
    ):
        body = b'{"actor":"amy","payment":{"method":"cash","amount_cents":' + amount + b"}}"
        response = await send(api, "PATCH", f"/api/jobs/{rows.job}", body)
        assert response.status_code == 422, response.text
        assert response.json()["errors"] == [{"field": "payment.amount_cents", "message": message}]
    assert rows.written() == before


def _job_bodies(job: str) -> list[tuple[str, str, dict[str, Any], str, str]]:
    at_most = "String should have at most {} characters"
    return [
        (
            "PATCH",
            f"/api/jobs/{job}",
            {"actor": "a" * 201, "notes": "x"},
            "actor",
            at_most.format(200),
        ),
        (
            "PATCH",
            f"/api/jobs/{job}",
            {"actor": "", "notes": "x"},
            "actor",
            "String should have at least 1 character",
        ),
        (
            "PATCH",
            f"/api/jobs/{job}",
            {"actor": "amy", "notes": "x" * 10_001},
            "notes",
            at_most.format(10_000),
        ),
        (
            "PATCH",
            f"/api/jobs/{job}",
            {"actor": "amy", "post_completion_issue": "x" * 10_001},
            "post_completion_issue",
            at_most.format(10_000),
        ),
        (
            "PATCH",
            f"/api/jobs/{job}",
            {"actor": "amy", "checklist": [{"item": "x" * 501}]},
            "checklist.0.item",
            at_most.format(500),
        ),
        (
            "PATCH",
            f"/api/jobs/{job}",
            {"actor": "amy", "photos_meta": [{"url": "u", "caption": "x" * 1001}]},
            "photos_meta.0.caption",
            at_most.format(1000),
        ),
        (
            "PATCH",
            f"/api/jobs/{job}",
            {"actor": "amy", "vehicle_info": {"vin": "x" * 18}},
            "vehicle_info.vin",
            at_most.format(17),
        ),
        (
            "POST",
            "/api/jobs/status",
            {"actor": "amy", "ids": [job, "x" * 256], "work_status": "en_route"},
            "ids.1",
            at_most.format(255),
        ),
        (
            "POST",
            "/api/jobs/status",
            {"actor": "amy", "ids": [""], "work_status": "en_route"},
            "ids.0",
            "String should have at least 1 character",
        ),
        (
            "POST",
            "/api/jobs/status",
            {"actor": "amy", "ids": [job] * 501, "work_status": "en_route"},
            "ids",
            "List should have at most 500 items after validation, not 501",
        ),
    ]


async def test_overlong_fields_are_422_naming_the_field(api: httpx.AsyncClient, rows: Rows) -> None:
    job, lead = rows.job, rows.lead
    cases = [
        *_job_bodies(job),
        (
            "PATCH",
            f"/api/leads/{lead}",
            {"actor": "amy", "notes": "x" * 10_001},
            "notes",
            "String should have at most 10000 characters",
        ),
        (
            "POST",
            f"/api/leads/{lead}/claim",
            {"actor": "a" * 201},
            "actor",
            "String should have at most 200 characters",
        ),
        (
            "POST",
            f"/api/leads/{lead}/unclaim",
            {"actor": "a" * 201},
            "actor",
            "String should have at most 200 characters",
        ),
    ]
    before = rows.written()
    for method, path, body, field, message in cases:
        response = await send(api, method, path, json.dumps(body).encode())
        assert response.status_code == 422, (path, body, response.text)
        problem = response.json()
        assert problem["error"] == "invalid_body"
        assert {"field": field, "message": message} in problem["errors"], problem
    assert rows.written() == before


async def test_idempotency_keys_missing_or_too_long_have_their_own_codes(
    api: httpx.AsyncClient, rows: Rows
) -> None:
    before = rows.written()
    body = {"actor": "amy", "notes": "x"}
    path = f"/api/jobs/{rows.job}"
    for headers in ({}, {"X-Idempotency-Key": ""}):
        response = await api.patch(path, json=body, headers=headers)
        assert_problem(
            response,
            400,
            "idempotency_key_required",
            "send X-Idempotency-Key (1 to 255 characters) with every change",
        )
    response = await api.patch(path, json=body, headers={"X-Idempotency-Key": "k" * 256})
    assert_problem(
        response,
        400,
        "idempotency_key_too_long",
        "X-Idempotency-Key is longer than 255 characters",
    )
    repeated = [("X-Idempotency-Key", key()), ("X-Idempotency-Key", key())]
    response = await api.patch(path, json=body, headers=repeated)
    assert_problem(response, 400, "bad_header", "X-Idempotency-Key: give it once, not 2 times")
    assert rows.written() == before
    exactly = await api.patch(path, json=body, headers={"X-Idempotency-Key": "k" * 255})
    assert exactly.status_code == 200, exactly.text
