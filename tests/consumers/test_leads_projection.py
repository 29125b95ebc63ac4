"""The leads projection under Airtable's documented payload behaviour: actions split across
payloads, cells the columns cannot hold, and tables deleted in the base."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

import psycopg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumers.airtable_fetcher import AirtableFetcher, Ping
from consumers.leads import LeadsProjection
from consumers.message import ConsumedMessage
from consumers.runtime import ConsumerConfig, ConsumerRuntime
from devkit.fakes.airtable import FakeAirtable
from ingest.airtable_fetch import change_event, fetch_webhook
from recovery.journey import find_journey
from schemas.airtable import RecordChange
from sluice.db import create_engine, transaction
from tests.support.airtable import (
    Airtable,
    apply_each,
    fetched_changes,
    lead,
    register,
)
from tests.support.api import api_client
from tests.support.recovery import apply_as, outbox_rows
from tests.support.services import libpq_url, running_server

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from tests.support.airtable import Conn


async def test_a_split_action_is_merged_across_consumer_transactions(
    airtable: Airtable, engine: AsyncEngine, db: Conn
) -> None:
    await register(engine, airtable)
    [rec] = airtable.fake.create_records(airtable.base.id, "Leads", [{"Full Name": "Ada"}])
    # One action, two payloads sharing its base transaction number.
    airtable.fake.update_records(
        airtable.base.id, "Leads", {rec: {"Company": "ACME", "Campaign": "spring"}}, split=2
    )
    changes = await fetched_changes(engine, airtable, db)
    assert [c.base_transaction_number for c in changes] == [1, 2, 2]

    await apply_each(engine, airtable.resolver(), [[c] for c in changes])

    assert lead(db, rec, "full_name", "company", "campaign", "airtable_txn") == (
        "Ada",
        "ACME",
        "spring",
        2,
    )


async def test_a_split_action_survives_a_poisoned_neighbour(
    airtable: Airtable, engine: AsyncEngine, db: Conn, database_url: str
) -> None:
    """A failing neighbour makes the batch apply one by one; the halves still merge."""
    await register(engine, airtable)
    [rec, bad] = airtable.fake.create_records(
        airtable.base.id, "Leads", [{"Full Name": "Ada"}, {"Full Name": "Bob"}]
    )
    await apply_each(engine, airtable.resolver(), [await fetched_changes(engine, airtable, db)])
    # The database refuses the neighbour's row, as it would any row it cannot take.
    db.execute(
        "ALTER TABLE leads ADD CONSTRAINT refuse_poison "
        "CHECK (email IS DISTINCT FROM 'poison@example.com')"
    )
    airtable.fake.update_records(
        airtable.base.id,
        "Leads",
        {rec: {"Company": "ACME", "Campaign": "spring"}, bad: {"Email": "poison@example.com"}},
        split=2,
    )
    await fetch_webhook(engine, airtable.client(), airtable.webhook.id)

    outcome = await apply_as(LeadsProjection(airtable.client()), database_url, outbox_rows(db))

    assert len(outcome.dead) == 1
    assert lead(db, rec, "company", "campaign", "airtable_txn") == ("ACME", "spring", 2)
    assert lead(db, bad, "full_name", "email") == ("Bob", None)


async def test_a_cell_its_column_cannot_hold_is_skipped_alone(
    airtable: Airtable, engine: AsyncEngine, db: Conn, database_url: str
) -> None:
    await register(engine, airtable)
    [rec] = airtable.fake.create_records(
        airtable.base.id,
        "Leads",
        [{"Full Name": "Ada", "SMS Sent Count": 1, "SMS Sequence Step": 2, "City": "York"}],
    )
    await apply_each(engine, airtable.resolver(), [await fetched_changes(engine, airtable, db)])
    airtable.fake.update_records(
        airtable.base.id,
        "Leads",
        {
            rec: {
                "SMS Sent Count": 2**31,  # past PostgreSQL's integer
                "SMS Sequence Step": "three",
                "Last SMS Sent At": "yesterday",
                "City": "Le\x00eds",
                "Company": "ACME",
                "Lead Status": "Contacted",
            }
        },
    )
    await fetch_webhook(engine, airtable.client(), airtable.webhook.id)

    outcome = await apply_as(LeadsProjection(airtable.client()), database_url, outbox_rows(db))

    # The rest of the change applied; each refused cell kept the column's value.
    assert outcome.dead == []
    assert lead(
        db,
        rec,
        "company",
        "lead_status",
        "sms_sent_count",
        "sms_sequence_position",
        "last_sms_sent_at",
        "city",
        "airtable_txn",
    ) == ("ACME", "Contacted", 1, 2, None, "York", 2)
    skipped = db.execute(
        "SELECT projection, row_key, column_name, value_json, reason FROM skipped_cells "
        "ORDER BY column_name"
    ).fetchall()
    assert [(r[0], r[1], r[2], r[3]) for r in skipped] == [
        ("leads", rec, "city", '"Le\\u0000eds"'),
        ("leads", rec, "last_sms_sent_at", '"yesterday"'),
        ("leads", rec, "sms_sent_count", "2147483648"),
        ("leads", rec, "sms_sequence_position", '"three"'),
    ]
    assert "out of range" in skipped[2][4]
    async with api_client(database_url) as api:
        shown = (await api.get(f"/api/leads/{rec}")).json()
    assert sorted((c["column_name"], c["reason"]) for c in shown["skipped_cells"]) == sorted(
        (r[2], r[4]) for r in skipped
    )
    assert outcome.tally == Counter(
        {
            ("sluice_consumer_cells_skipped", ("nul",)): 1,
            ("sluice_consumer_cells_skipped", ("not_a_time",)): 1,
            ("sluice_consumer_cells_skipped", ("out_of_range",)): 1,
            ("sluice_consumer_cells_skipped", ("not_a_number",)): 1,
        }
    )


async def test_a_deleted_table_marks_its_leads_deleted_and_keeps_staff_data(
    airtable: Airtable, engine: AsyncEngine, db: Conn, database_url: str
) -> None:
    await register(engine, airtable)
    [ada, bob] = airtable.fake.create_records(
        airtable.base.id, "Leads", [{"Full Name": "Ada"}, {"Full Name": "Bob"}]
    )
    await apply_each(engine, airtable.resolver(), [await fetched_changes(engine, airtable, db)])
    db.execute("UPDATE leads SET claimed_by = 'sam', notes = 'call' WHERE record_id = %s", (ada,))
    [carl] = airtable.fake.create_records(airtable.base.id, "Leads", [{"Full Name": "Carl"}])
    table_id = airtable.fake.destroy_table(airtable.base.id, "Leads")

    fetcher = AirtableFetcher(airtable.client())
    async with transaction(engine) as conn:
        fetched = await fetcher.apply(conn, [Ping(airtable.webhook.id, airtable.base.id)])
    # Carl's creation and the table's destruction arrive in one batch.
    outcome = await apply_as(LeadsProjection(airtable.client()), database_url, outbox_rows(db))

    assert fetched.tally[("sluice_airtable_tables_destroyed", ())] == 1
    assert outcome.dead == []
    rows = db.execute(
        "SELECT record_id, deleted_at IS NOT NULL, full_name, claimed_by, notes FROM leads "
        "WHERE record_id <> %s ORDER BY full_name",
        (carl,),
    ).fetchall()
    assert rows == [(ada, True, "Ada", "sam", "call"), (bob, True, "Bob", None, None)]
    # Created just before the table went: not projected (the base no longer has its table) or
    # projected and marked, depending on when the base's schema was read; never live.
    assert db.execute(
        "SELECT count(*) FROM leads WHERE table_id = %s AND deleted_at IS NULL", (table_id,)
    ).fetchone() == (0,)
    assert db.execute(
        "SELECT event_type, entity_type, entity_id FROM inbound_events "
        "WHERE event_type = 'airtable.table.destroyed'"
    ).fetchall() == [("airtable.table.destroyed", "table", f"{airtable.base.id}/{table_id}")]
    assert db.execute("SELECT destroyed_table_ids FROM airtable_webhooks").fetchone() == (
        [table_id],
    )


async def test_a_change_older_than_the_row_is_reported_stale_with_both_versions(
    airtable: Airtable, engine: AsyncEngine, db: Conn, database_url: str
) -> None:
    await register(engine, airtable)
    [rec] = airtable.fake.create_records(airtable.base.id, "Leads", [{"Full Name": "Ada"}])
    airtable.fake.update_records(airtable.base.id, "Leads", {rec: {"Company": "ACME"}})
    airtable.fake.update_records(airtable.base.id, "Leads", {rec: {"Company": "Beta"}})
    await fetch_webhook(engine, airtable.client(), airtable.webhook.id)
    created, older, newer = outbox_rows(db)
    leads = LeadsProjection(airtable.client())

    # Two versions of one record in a batch are applied in order: neither is stale.
    first = await apply_as(leads, database_url, [created, newer])
    late = await apply_as(leads, database_url, [older])

    assert (first.applied, first.stale, late.applied, late.stale) == (2, 0, 1, 1)
    assert lead(db, rec, "company", "airtable_txn") == ("Beta", 3)
    journey = await find_journey(engine, older["headers"]["ce_id"])
    assert journey is not None
    assert [(o["consumer"], o["outcome"], o["detail"]) for o in journey["outcomes"]] == [
        ("leads", "stale", {"key": rec, "row_version": 3, "event_version": 2})
    ]
    recorded = db.execute(
        "SELECT event_id, outcome FROM consumer_dedupe WHERE consumer = 'leads'"
    ).fetchall()
    assert sorted(recorded) == sorted(
        [
            (created["headers"]["ce_id"], "applied"),
            (newer["headers"]["ce_id"], "applied"),
            (older["headers"]["ce_id"], "stale"),
        ]
    )


# ---- property: however Airtable splits actions and however they arrive ----

FIELDS = ("Company", "Campaign", "City", "SMS Sent Count")
COLUMNS = ("company", "campaign", "city", "sms_sent_count")
VALUES: dict[str, st.SearchStrategy[Any]] = {
    "Company": st.sampled_from(["ACME", "Initech", "Hooli"]),
    "Campaign": st.sampled_from(["spring", "summer"]),
    "City": st.sampled_from(["Leeds", "York", "Bath"]),
    "SMS Sent Count": st.integers(0, 5),
}
Mode = Literal["runtime", "direct", "one_by_one"]


@dataclass(frozen=True)
class Part:
    """One payload's share of one action: the cells it carries."""

    txn: int
    number: int  # the payload's cursor: unique per part
    cells: tuple[tuple[str, Any], ...]  # (field name, value)


@st.composite
def actions(draw: st.DrawFn) -> list[list[Part]]:
    """Actions 2, 3, ... (1 created the record), each split into one to three payloads."""
    result: list[list[Part]] = []
    number = 2
    for txn in range(2, 2 + draw(st.integers(1, 4))):
        names = draw(st.lists(st.sampled_from(FIELDS), min_size=1, unique=True))
        cells = [(name, draw(VALUES[name])) for name in names]
        parts = draw(st.integers(1, min(3, len(cells))))
        split = [tuple(cells[i::parts]) for i in range(parts)]
        result.append([Part(txn, number + i, share) for i, share in enumerate(split)])
        number += parts
    return result


@st.composite
def deliveries(
    draw: st.DrawFn, *, in_order: bool
) -> tuple[list[list[Part]], list[tuple[list[Part], Mode]]]:
    """The actions, and their parts as they arrive: in batches, each applied one way."""
    done = draw(actions())
    if in_order:  # action after action, the parts of each in any order
        arrival = [p for parts in done for p in draw(st.permutations(parts))]
    else:
        arrival = list(draw(st.permutations([p for parts in done for p in parts])))
    # Redeliveries: a part again, somewhere after its first arrival.
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(arrival) - 1))
        arrival.insert(draw(st.integers(at + 1, len(arrival))), arrival[at])
    modes: list[Mode] = ["runtime", "direct", "one_by_one"]
    batches = []
    while arrival:
        size = draw(st.integers(1, 4))
        batches.append((arrival[:size], draw(st.sampled_from(modes))))
        arrival = arrival[size:]
    return done, batches


async def deliver(
    world: Airtable,
    engine: AsyncEngine,
    record_id: str,
    batches: list[tuple[list[Part], Mode]],
) -> None:
    table = world.table
    projection = LeadsProjection(world.client())
    config = ConsumerConfig(bootstrap_servers="unused", group_id="leads-property")
    runtime = ConsumerRuntime(projection, engine, config)
    resolver = world.resolver()
    messages: dict[Part, ConsumedMessage] = {}

    def change(part: Part) -> RecordChange:
        return RecordChange(
            base_id=world.base.id,
            table_id=table.id,
            record_id=record_id,
            action="changed",
            webhook_id=world.webhook.id,
            payload_cursor=part.number,
            base_transaction_number=part.txn,
            timestamp=datetime.now(UTC),
            change_source="client",
            cells={table.field(name).id: value for name, value in part.cells},
        )

    def message(part: Part) -> ConsumedMessage:
        if part not in messages:  # a redelivery is the same message, same ce_id
            outbox = change_event(change(part)).message
            messages[part] = ConsumedMessage(
                topic=outbox.topic,
                partition=0,
                offset=len(messages),
                key=outbox.key.encode(),
                value=outbox.payload_json.encode(),
                headers=tuple((k, v.encode()) for k, v in outbox.headers.items()),
            )
        return messages[part]

    for parts, mode in batches:
        if mode == "runtime":
            outcome = await runtime.apply_batch([message(p) for p in parts])
            assert outcome.dead == []
        elif mode == "direct":  # no dedupe record: as after a replay of pruned events
            await apply_each(engine, resolver, [[change(p) for p in parts]])
        else:  # the one-by-one fallback after a neighbour failed
            await apply_each(engine, resolver, [[change(p)] for p in parts])


def composed(initial: dict[str, Any], done: list[list[Part]]) -> dict[str, Any]:
    state = dict(initial)
    for parts in done:
        for part in parts:
            state.update(part.cells)
    return state


async def scenario(
    database_url: str, batches: list[tuple[list[Part], Mode]]
) -> tuple[dict[str, Any], tuple[Any, ...]]:
    fake = FakeAirtable()
    async with running_server(fake.app) as url:
        world = Airtable(fake, url)
        engine = create_engine(database_url, pool_size=2)
        try:
            initial = {"Company": "Orig", "Campaign": "winter", "City": "Hull", "SMS Sent Count": 9}
            [record_id] = fake.create_records(world.base.id, "Leads", [initial])
            await register(engine, world)
            with psycopg.connect(libpq_url(database_url), autocommit=True) as db:
                await apply_each(
                    engine, world.resolver(), [await fetched_changes(engine, world, db)]
                )
                await deliver(world, engine, record_id, batches)
                return initial, lead(db, record_id, *COLUMNS, "airtable_txn")
        finally:
            await engine.dispose()


PROPERTY = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@PROPERTY
@given(deliveries(in_order=True))
def test_split_actions_arriving_in_order_end_as_airtable_holds_them(
    database_url: str, case: tuple[list[list[Part]], list[tuple[list[Part], Mode]]]
) -> None:
    done, batches = case
    initial, row = asyncio.run(scenario(database_url, batches))
    expected = composed(initial, done)
    assert row == (*(expected[name] for name in FIELDS), done[-1][0].txn)


@PROPERTY
@given(deliveries(in_order=False))
def test_the_newest_action_is_complete_whatever_the_order(
    database_url: str, case: tuple[list[list[Part]], list[tuple[list[Part], Mode]]]
) -> None:
    done, batches = case
    initial, row = asyncio.run(scenario(database_url, batches))
    *cells, version = row
    newest = done[-1]
    assert version == newest[0].txn
    values = dict(zip(FIELDS, cells, strict=True))
    for part in newest:  # every part of the newest action merged, in any order
        for name, value in part.cells:
            assert values[name] == value
    for name in FIELDS:  # and nothing else came from anywhere but Airtable's own changes
        carried = {v for parts in done for part in parts for n, v in part.cells if n == name}
        assert values[name] in {initial[name], *carried}
