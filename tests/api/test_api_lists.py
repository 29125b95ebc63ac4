"""Lists that scale: keyset pages with opaque cursors and a `next` link, stable while rows are
inserted, and filters each read through an index. A real PostgreSQL and server."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest

from api.jobs import JOB_FILTERS, SORT_KEY
from tests.support.api import api_client, insert_job, insert_lead

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import httpx

    from tests.support.api import Conn

T0 = datetime(2030, 1, 1, 9, tzinfo=UTC)


@pytest.fixture
async def api(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(database_url) as client:
        yield client


async def walk(api: httpx.AsyncClient, path: str, key: str) -> list[list[dict[str, Any]]]:
    pages: list[list[dict[str, Any]]] = []
    url: str | None = path
    while url is not None:
        answer = await api.get(url)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        pages.append(body[key])
        url = body["next"]
        if url is not None:
            assert answer.headers["link"] == f'<{url}>; rel="next"'
    return pages


async def test_jobs_page_in_start_order_and_a_job_inserted_meanwhile_moves_no_other(
    api: httpx.AsyncClient, db: Conn
) -> None:
    made = [insert_job(db, start_at=T0 + timedelta(hours=n)) for n in range(25)]
    db.execute("INSERT INTO jobs (booking_id, status) VALUES ('bk_no_start', 'ACCEPTED')")
    first = await api.get("/api/jobs?limit=10&from=2030-01-01")
    assert [j["booking_id"] for j in first.json()["jobs"]] == made[:10]
    # Before the next page, a job is booked earlier than every listed one: no page shifts.
    insert_job(db, start_at=T0 - timedelta(hours=1))
    rest = await walk(api, first.json()["next"], "jobs")
    ids = [j["booking_id"] for page in rest for j in page]
    assert ids == [*made[10:], "bk_no_start"]  # a job with no start comes last
    assert [len(p) for p in rest] == [10, 6]
    assert "cursor=" in first.json()["next"]
    assert "from=2030-01-01" in first.json()["next"]  # the filters travel with the cursor


async def test_each_job_filter_narrows_the_list(api: httpx.AsyncClient, db: Conn) -> None:
    ids = [insert_job(db, start_at=T0 + timedelta(minutes=n)) for n in range(6)]
    db.execute(
        "UPDATE jobs SET location_id = 'L1', team_member_id = 'TM1', customer_id = 'C1',"
        " status = 'CANCELLED_BY_CUSTOMER', work_status = 'completed'"
        " WHERE booking_id = ANY(%s)",
        (ids[:2],),
    )
    values = {
        "location": "L1",
        "status": "CANCELLED_BY_CUSTOMER",
        "work_status": "completed",
        "team_member": "TM1",
        "customer": "C1",
    }
    assert set(values) == set(JOB_FILTERS)
    for name, value in values.items():
        listed = (await api.get(f"/api/jobs?{name}={value}")).json()["jobs"]
        assert [j["booking_id"] for j in listed] == ids[:2], name
    window = "from=2030-01-01T09:01:00Z&to=2030-01-01T09:03:00Z"
    listed = (await api.get(f"/api/jobs?{window}&work_status=scheduled")).json()["jobs"]
    assert [j["booking_id"] for j in listed] == ids[2:3]


async def test_leads_page_and_filter_by_claim_status_sync_and_conflict(
    api: httpx.AsyncClient, db: Conn
) -> None:
    leads = sorted(insert_lead(db, f"rec{n:02d}{uuid.uuid4().hex[:10]}") for n in range(7))
    db.execute(
        "UPDATE leads SET claimed_by = 'amy', lead_status = 'Won' WHERE record_id = %s", (leads[1],)
    )
    db.execute(
        "INSERT INTO lead_sync (record_id, status) VALUES (%s, 'failed'), (%s, 'conflict')",
        (leads[2], leads[3]),
    )
    db.execute(
        "INSERT INTO sync_conflicts (record_id, column_name, app_changed_at, airtable_changed_at)"
        " VALUES (%s, 'notes', now(), now())",
        (leads[3],),
    )
    pages = await walk(api, "/api/leads?limit=3", "leads")
    assert [r["record_id"] for page in pages for r in page] == leads
    assert [len(p) for p in pages] == [3, 3, 1]

    async def listed(query: str) -> list[str]:
        answer = await api.get(f"/api/leads?{query}")
        assert answer.status_code == 200, answer.text
        return [r["record_id"] for r in answer.json()["leads"]]

    assert await listed("claimed_by=amy") == [leads[1]]
    assert await listed("lead_status=Won") == [leads[1]]
    assert await listed("sync_status=failed") == [leads[2]]
    assert await listed("conflict=true") == [leads[3]]
    assert leads[3] not in await listed("conflict=false")
    assert len(await listed("conflict=false")) == 6


@pytest.mark.parametrize(
    ("path", "parameter"),
    [
        ("/api/jobs?cursor=not-a-cursor", "cursor"),
        ("/api/jobs?cursor=WyJ4Il0", "cursor"),  # a cursor of the leads' shape
        ("/api/leads?cursor=" + "A" * 700, "cursor"),
        ("/api/leads?sync_status=lost", "sync_status"),
        ("/api/leads?conflict=maybe", "conflict"),
        ("/api/jobs?location=" + "L" * 300, "location"),
    ],
)
async def test_a_bad_cursor_or_filter_is_a_400_that_names_it(
    api: httpx.AsyncClient, path: str, parameter: str
) -> None:
    answer = await api.get(path)
    assert answer.status_code == 400, answer.text
    assert answer.json()["parameter"] == parameter


@pytest.mark.parametrize("column", [None, *JOB_FILTERS.values()])
def test_each_jobs_filter_reads_its_index(db: Conn, column: str | None) -> None:
    where = f"WHERE {column} = 'x'" if column else ""
    db.execute("SET enable_seqscan = off")
    plan = db.execute(
        f"EXPLAIN SELECT * FROM jobs {where} ORDER BY {SORT_KEY}, booking_id LIMIT 50"  # noqa: S608
    ).fetchall()
    text = "\n".join(row[0] for row in plan)
    index = f"ix_jobs_list_{column}" if column else "ix_jobs_list"
    assert f"Index Scan using {index} " in text, text
    assert "Sort" not in text, text  # read in order: no sort of the matches
