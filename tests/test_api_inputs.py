"""Every bad input to the App API is answered with a 4xx problem that says what is wrong, never a
5xx, and writes nothing: query parameters, the Last-Event-ID header and path ids."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest

from tests.api_helpers import api_client, insert_job, insert_lead, key, written

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import httpx

    from tests.api_helpers import Conn

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
