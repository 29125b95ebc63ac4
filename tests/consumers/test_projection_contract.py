"""The contract every projection keeps, run against each of them as one suite.

Whatever the order the versions of an entity arrive in, however often each is delivered, and
however the deliveries fall into batches, a projection:

- ends at the newest version's source-owned state (order-tolerant: each version here carries the
  entity's whole state, as a Square object or a snapshot of an Airtable record does);
- never writes an app-owned column (staff values set before the deliveries are still there);
- is idempotent under redelivery: applying every message again, past the consumer's dedupe
  record (as a replay after the record was pruned does), changes no row and logs no change.

A projection joins the suite with a `Contract`: how to make it, how to build the message of one
version, and which columns to read back.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumers.jobs import JobsProjection
from consumers.leads import LeadsProjection
from consumers.message import ConsumedMessage
from consumers.runtime import ConsumerConfig, ConsumerRuntime
from devkit.fakes.airtable import FakeAirtable
from devkit.simulate import square_event
from ingest.airtable_fetch import change_event, register_webhook
from schemas.airtable import RecordChange
from schemas.leads import LEADS
from schemas.projections import JOBS
from sluice.db import create_engine, transaction
from tests.support.airtable import Airtable
from tests.support.consumers import consumed
from tests.support.services import running_server

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from sqlalchemy.ext.asyncio import AsyncEngine

    from consumers.message import Projection
    from schemas.ownership import Ownership

Conn = psycopg.Connection[tuple[Any, ...]]
TOPICS = ("contract.bookings", "contract.customers")


@dataclass(frozen=True)
class Version:
    number: int
    state: tuple[str, str, str]  # three source-owned values, one per entry of Contract.columns


class Contract(Protocol):
    """What the suite needs of one projection."""

    ownership: Ownership
    columns: tuple[str, str, str]  # the source-owned columns the three values land in
    staff: tuple[tuple[str, Any], ...]  # app-owned columns and what staff set them to first

    def projection(self) -> Projection[Any]: ...

    def message(self, key: str, version: Version, offset: int) -> ConsumedMessage: ...


class JobsContract:
    ownership = JOBS
    columns: tuple[str, str, str] = ("status", "location_id", "team_member_id")
    staff: tuple[tuple[str, Any], ...] = (
        ("notes", "call first"),
        ("work_status", "in_progress"),
        ("post_completion_issue", "scratched door"),
    )

    def projection(self) -> Projection[Any]:
        return JobsProjection(TOPICS)

    def message(self, key: str, version: Version, offset: int) -> ConsumedMessage:
        body = square_event(
            "booking.updated",
            entity_id=key,
            version=version.number,
            event_id=f"{key}-{version.number}",
        )
        booking = body["data"]["object"]["booking"]
        booking["status"], booking["location_id"], team = version.state
        booking["appointment_segments"][0]["team_member_id"] = team
        return consumed(body, TOPICS, offset=offset)


class LeadsContract:
    ownership = LEADS
    columns: tuple[str, str, str] = ("company", "campaign", "city")
    staff: tuple[tuple[str, Any], ...] = (("claimed_by", "amy"), ("notes", "call back"))

    def __init__(self, world: Airtable) -> None:
        self._world = world

    def projection(self) -> Projection[Any]:
        return LeadsProjection(self._world.client())

    def message(self, key: str, version: Version, offset: int) -> ConsumedMessage:
        table = self._world.table
        cells = dict(zip(("Company", "Campaign", "City"), version.state, strict=True))
        change = RecordChange(
            base_id=self._world.base.id,
            table_id=table.id,
            record_id=key,
            action="changed",
            webhook_id=self._world.webhook.id,
            payload_cursor=version.number,
            base_transaction_number=version.number,
            timestamp=datetime(2026, 1, 1, tzinfo=UTC),
            change_source="client",
            cells={table.field(name).id: value for name, value in cells.items()},
        )
        outbox = change_event(change).message
        return ConsumedMessage(
            topic=outbox.topic,
            partition=0,
            offset=offset,
            key=outbox.key.encode(),
            value=outbox.payload_json.encode(),
            headers=tuple((k, v.encode()) for k, v in outbox.headers.items()),
        )


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[list[Version], list[list[int]]]:
    """Versions 1..n, each a whole state; the order they arrive in (indexes, repeats included),
    cut into batches."""
    values = st.sampled_from(["a", "b", "c"])
    versions = [
        Version(number, (draw(values), draw(values), draw(values)))
        for number in range(1, draw(st.integers(2, 5)) + 1)
    ]
    order = list(draw(st.permutations(range(len(versions)))))
    for _ in range(draw(st.integers(0, 3))):
        order.insert(draw(st.integers(0, len(order))), draw(st.sampled_from(order)))
    batches: list[list[int]] = []
    while order:
        size = draw(st.integers(1, 3))
        batches.append(order[:size])
        order = order[size:]
    return versions, batches


def row(db: Conn, contract: Contract, key: str, columns: tuple[str, ...]) -> tuple[Any, ...]:
    ownership = contract.ownership
    found = db.execute(
        f"SELECT {', '.join(columns)} FROM {ownership.name} WHERE {ownership.key} = %s",  # noqa: S608 - declared names
        (key,),
    ).fetchone()
    assert found is not None
    return tuple(found)


def changes_logged(db: Conn) -> int:
    found = db.execute("SELECT count(*) FROM projection_changes").fetchone()
    assert found is not None
    return int(found[0])


async def keep_contract(
    contract: Contract,
    engine: AsyncEngine,
    db: Conn,
    case: tuple[list[Version], list[list[int]]],
) -> None:
    versions, batches = case
    key = f"rec{uuid.uuid4().hex[:14]}"
    projection = contract.projection()
    runtime = ConsumerRuntime(
        projection, engine, ConsumerConfig(bootstrap_servers="unused", group_id="contract")
    )
    messages = [contract.message(key, v, offset=i) for i, v in enumerate(versions)]

    # The first delivery makes the row; staff work on it before anything else arrives.
    first, *rest_of_first = batches[0]
    assert (await runtime.apply_batch([messages[first]])).dead == []
    ownership = contract.ownership
    staff = dict(contract.staff)
    assignments = ", ".join(f"{column} = %s" for column in staff)
    db.execute(
        f"UPDATE {ownership.name} SET {assignments} WHERE {ownership.key} = %s",  # noqa: S608 - declared names
        (*staff.values(), key),
    )
    for batch in [rest_of_first, *batches[1:]]:
        if batch:
            assert (await runtime.apply_batch([messages[i] for i in batch])).dead == []

    newest = max(versions, key=lambda v: v.number)
    assert row(db, contract, key, (*contract.columns, ownership.version)) == (
        *newest.state,
        newest.number,
    )
    assert row(db, contract, key, tuple(staff)) == tuple(staff.values())

    # Every message once more, past the dedupe record: nothing changes, nothing is logged.
    before, logged = row(db, contract, key, ("*",)), changes_logged(db)
    items = [decoded.value for m in messages if (decoded := projection.decode(m)) is not None]
    async with transaction(engine) as conn:
        await projection.apply(conn, items)
    assert row(db, contract, key, ("*",)) == before
    assert changes_logged(db) == logged


@pytest.fixture(params=["jobs", "leads"])
def projection_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=deliveries())
def test_every_projection_keeps_the_contract(
    projection_name: str, database_url: str, db: Conn, case: tuple[list[Version], list[list[int]]]
) -> None:
    async def run() -> None:
        async with contract_for(projection_name, database_url) as (contract, engine):
            await keep_contract(contract, engine, db, case)

    asyncio.run(run())


@contextlib.asynccontextmanager
async def contract_for(name: str, database_url: str) -> AsyncIterator[tuple[Contract, AsyncEngine]]:
    engine = create_engine(database_url, pool_size=2)
    try:
        if name == "jobs":
            yield JobsContract(), engine
            return
        fake = FakeAirtable()
        async with running_server(fake.app) as url:
            world = Airtable(fake, url)
            async with transaction(engine) as conn:
                await register_webhook(conn, world.webhook.id, world.base.id)
            yield LeadsContract(world), engine
    finally:
        await engine.dispose()
