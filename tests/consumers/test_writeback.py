"""Write-back to the fake Airtable API over HTTP, on a real PostgreSQL: batching, the measured
request rate, conflicts, per-record failures, and the circuit breaker.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import pytest
from pyairtable.models.webhook import WebhookPayload
from sqlalchemy import text

from consumers.airtable_projection import MappingResolver, apply_record_changes
from consumers.lead_sync import resolve_conflicts, stamp_app_change
from consumers.writeback_pusher import PusherConfig, WritebackPusher
from ingest.airtable_fetch import payload_changes
from providers.airtable import (
    AirtableClient,
    AirtableUnavailableError,
    breaker_counts,
)
from schemas.leads import AIRTABLE_MAPPINGS
from sluice.db import transaction
from sluice.resilience import Backoff, BreakerState, CircuitBreaker, RetryPolicy
from tests.support.api import insert_lead
from tests.support.rows import scalar

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from devkit.fakes.airtable import FakeAirtable, FakeTable
    from tests.support.airtable import Airtable
    from tests.support.api import Conn

FAST = PusherConfig(
    call_retry=RetryPolicy(attempts=1, retry_on=AirtableUnavailableError),
    record_backoff=Backoff(0.01, 0.02),
    poll_seconds=0.05,
)


class World:
    def __init__(
        self,
        fake: FakeAirtable,
        base_id: str,
        table: FakeTable,
        client: AirtableClient,
        engine: AsyncEngine,
    ) -> None:
        self.fake, self.base_id, self.table, self.client, self.engine = (
            fake,
            base_id,
            table,
            client,
            engine,
        )

    def pusher(
        self, breaker: CircuitBreaker | None = None, config: PusherConfig = FAST
    ) -> WritebackPusher:
        return WritebackPusher(
            self.engine,
            self.client,
            breaker or CircuitBreaker("airtable", counts=breaker_counts),
            config,
        )

    def leads(self, db: Conn, count: int) -> list[str]:
        ids = self.fake.create_records(
            self.base_id, "Leads", [{"Full Name": f"Lead {i}"} for i in range(count)]
        )
        for record_id in ids:
            insert_lead(db, record_id, self.base_id, self.table.id)
        return ids

    async def staff_change(self, record_ids: list[str], column: str, value: Any) -> None:
        async with transaction(self.engine) as conn:
            for record_id in record_ids:
                await conn.execute(
                    text(f"UPDATE leads SET {column} = :v WHERE record_id = :id"),  # noqa: S608
                    {"v": value, "id": record_id},
                )
                await stamp_app_change(conn, record_id, [column])

    def cell(self, record_id: str, field: str) -> Any:
        return self.table.records[record_id].cells.get(self.table.field(field).id)

    def patches(self) -> list[Any]:
        return [
            r for r in self.fake.requests_for(self.base_id, self.table.id) if r.method == "PATCH"
        ]


@pytest.fixture
def world(airtable: Airtable, engine: AsyncEngine) -> World:
    """The shared Airtable world, seen from the write-back: its client, pusher and staff."""
    return World(airtable.fake, airtable.base.id, airtable.table, airtable.client(), engine)


@pytest.mark.slow
async def test_batches_of_ten_at_most_five_requests_per_second(world: World, db: Conn) -> None:
    world.fake.rate_limit_per_base = 5  # the fake enforces Airtable's limit: 429 past it
    ids = world.leads(db, 120)
    await world.staff_change(ids, "notes", "called")
    pusher = world.pusher()
    first = await pusher.push_once()
    second = await pusher.push_once()
    assert (first.claimed, second.claimed) == (100, 20)
    patches = world.patches()
    assert len(patches) == 12  # 120 records, 10 per request
    assert {r.status for r in patches} == {200}  # the fake enforces 5/s itself: no 429
    times = sorted(r.at for r in patches)
    busiest = max(sum(1 for t in times if start <= t < start + 1.0) for start in times)
    assert busiest <= 5
    rate = (len(times) - 1) / (times[-1] - times[0])
    assert rate <= 5.5, rate
    assert all(world.cell(i, "Notes") == "called" for i in ids)
    assert scalar(db, "SELECT count(*) FROM lead_sync WHERE status = 'synced'") == 120


async def test_airtable_edit_newer_than_the_app_wins_and_is_recorded(
    world: World, db: Conn
) -> None:
    (record_id,) = world.leads(db, 1)
    hook = world.fake.add_webhook(
        world.base_id, None, {"options": {"filters": {"dataTypes": ["tableData"]}}}
    )
    await world.staff_change([record_id], "notes", "from the app")
    await world.staff_change([record_id], "claimed_by", "amy")
    await asyncio.sleep(0.01)
    # Then a colleague edits Notes in Airtable; the leads projection sees it.
    world.fake.update_records(world.base_id, "Leads", {record_id: {"Notes": "from Airtable"}})
    resolver = MappingResolver(world.client, AIRTABLE_MAPPINGS)
    changes = [
        change
        for number, payload in enumerate(hook.payloads, start=1)
        for change in payload_changes(
            hook.id, world.base_id, number, WebhookPayload.model_validate(payload)
        )
    ]
    async with transaction(world.engine) as conn:
        await apply_record_changes(conn, resolver, changes, {world.fake.user_id})

    pusher = world.pusher()
    summary = await pusher.push_once()
    assert summary.conflicts == 1
    # The consumer's /metrics: the lead in conflict, the claim's push timed, every request.
    metrics = pusher.metrics.registry
    assert metrics.get_sample_value("sluice_writeback_leads", {"status": "conflict"}) == 1
    assert metrics.get_sample_value("sluice_writeback_leads", {"status": "synced"}) == 0
    assert metrics.get_sample_value("sluice_writeback_push_seconds_count") == 1  # claimed_by
    sent = {"component": "airtable-writeback"}
    # Every request of the client, the test's own schema read included.
    requests = metrics.get_sample_value("sluice_airtable_requests_total", sent)
    assert requests == world.client.requests_sent >= summary.requests == 1
    assert world.cell(record_id, "Notes") == "from Airtable"
    assert world.cell(record_id, "Claimed By") == "amy"
    conflict = db.execute(
        "SELECT column_name, app_value, airtable_value FROM sync_conflicts"
    ).fetchone()
    assert conflict == ("notes", "from the app", "from Airtable")
    # Not synced: the app and Airtable hold different notes until staff resolve it.
    assert scalar(db, "SELECT status FROM lead_sync WHERE record_id = %s", record_id) == "conflict"
    # Staff keep the app's value: it is stamped again and the next push sends it.
    async with transaction(world.engine) as conn:
        await resolve_conflicts(conn, record_id, ["notes"], keep="app", actor="amy")
    second = world.pusher()
    again = await second.push_once()
    assert again.conflicts == 0
    after = second.metrics.registry
    assert after.get_sample_value("sluice_writeback_leads", {"status": "conflict"}) == 0
    assert after.get_sample_value("sluice_writeback_leads", {"status": "synced"}) == 1
    assert world.cell(record_id, "Notes") == "from the app"
    assert scalar(db, "SELECT status FROM lead_sync WHERE record_id = %s", record_id) == "synced"
    resolved = db.execute("SELECT resolved_by, resolution FROM sync_conflicts").fetchone()
    assert resolved == ("amy", "app")


async def test_a_bad_record_fails_alone_and_says_why(world: World, db: Conn) -> None:
    ids = world.leads(db, 9)
    ghost = insert_lead(db, "recGHOST0000000001", world.base_id, world.table.id)  # not in Airtable
    await world.staff_change([*ids, ghost], "notes", "hello")
    summary = await world.pusher().push_once()
    assert (summary.synced, summary.failed) == (9, 1)
    row = db.execute(
        "SELECT status, attempts, last_error, next_attempt_at FROM lead_sync WHERE record_id = %s",
        (ghost,),
    ).fetchone()
    assert row is not None
    assert row[:2] == ("failed", 1)
    assert "404" in row[2]
    assert row[3] is None  # a 4xx is not retried until staff change the lead again
    assert all(world.cell(i, "Notes") == "hello" for i in ids)


def state_of(breaker: CircuitBreaker) -> BreakerState:
    """Read afresh: the state moves with time, which the type checker cannot see."""
    return breaker.state


async def test_breaker_opens_on_outage_and_closes_after_a_probe(world: World, db: Conn) -> None:
    ids = world.leads(db, 20)
    await world.staff_change(ids, "notes", "retry me")
    breaker = CircuitBreaker("airtable", threshold=2, reset_seconds=0.5, counts=breaker_counts)
    pusher = world.pusher(breaker)
    world.fake.fail_next(503, times=2, path_contains=world.table.id)
    failing = await pusher.push_once()
    assert failing.failed == 20
    assert breaker.state is BreakerState.OPEN
    status = db.execute("SELECT status, attempts, last_error FROM lead_sync LIMIT 1").fetchone()
    assert status is not None
    assert status[0] == "failed"
    assert "503" in status[2] or "Server Error" in status[2]

    await asyncio.sleep(0.05)  # the records' retry time has come, the breaker's has not
    calls = len(world.patches())
    refused = await pusher.push_once()
    assert (refused.failed, refused.requests) == (20, 0)
    assert len(world.patches()) == calls  # open: Airtable was not called

    await asyncio.sleep(0.5)
    assert state_of(breaker) is BreakerState.HALF_OPEN
    probing = await pusher.push_once()
    assert probing.synced == 20
    assert state_of(breaker) is BreakerState.CLOSED
    assert scalar(db, "SELECT count(*) FROM lead_sync WHERE status = 'synced'") == 20


async def test_a_429_pauses_the_base_then_the_update_goes_through(world: World, db: Conn) -> None:
    ids = world.leads(db, 3)
    await world.staff_change(ids, "notes", "patient")
    config = PusherConfig(call_retry=RetryPolicy(attempts=2, retry_on=AirtableUnavailableError))
    world.fake.fail_next(429, times=1, path_contains=world.table.id)
    summary = await world.pusher(config=config).push_once()
    assert summary.synced == 3
    refused, accepted = world.patches()
    assert (refused.status, accepted.status) == (429, 200)
    assert accepted.at - refused.at >= 0.3  # the client's pause after a 429 (30 s by default)


async def test_an_unavailable_airtable_is_tried_three_times_per_request(
    world: World, db: Conn
) -> None:
    ids = world.leads(db, 3)
    await world.staff_change(ids, "notes", "third time lucky")
    world.fake.fail_next(503, times=2, path_contains=world.table.id)
    summary = await world.pusher(config=PusherConfig()).push_once()  # the default: 3 tries
    assert (summary.synced, summary.failed) == (3, 0)
    assert [r.status for r in world.patches()] == [503, 503, 200]
    assert summary.requests == 3  # every request sent, the retries included

    more = world.leads(db, 1)
    await world.staff_change(more, "notes", "never")
    world.fake.fail_next(503, times=3, path_contains=world.table.id)
    gave_up = await world.pusher(config=PusherConfig()).push_once()
    assert (gave_up.failed, gave_up.requests) == (1, 3)
    assert len(world.patches()) == 6
    row = db.execute("SELECT status, next_attempt_at FROM lead_sync WHERE record_id = %s", more)
    status = row.fetchone()
    assert status is not None
    assert status[0] == "failed"
    assert status[1] is not None  # unavailable: tried again later
