"""Property: whatever the order, duplication and batching of Square events, and whatever staff do
in between, every source-owned column ends at the highest version and every app-owned column at
the last staff edit. Applied through the runtime's own `apply_batch`, on real PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devkit.simulate import square_event
from sluice.db import create_engine
from tests.support.consumers import consumed, fresh_topics, job, offline_runtime

if TYPE_CHECKING:
    from consumers.message import ConsumedMessage
    from tests.support.consumers import Conn

BOOKINGS = ("bkA", "bkB", "bkC")
CUSTOMERS = ("CUA", "CUB")
TOPICS = fresh_topics()


@dataclass(frozen=True)
class BookingVersion:
    booking_id: str
    version: int
    status: str
    customer_id: str
    duration: int


@dataclass(frozen=True)
class CustomerVersion:
    customer_id: str
    version: int
    name: str
    email: str


@dataclass(frozen=True)
class StaffEdit:
    booking_id: str
    notes: str
    work_status: str


Event = BookingVersion | CustomerVersion


def booking_versions(booking_id: str) -> st.SearchStrategy[list[BookingVersion]]:
    content = st.tuples(
        st.sampled_from(["PENDING", "ACCEPTED", "CANCELLED_BY_CUSTOMER", "DECLINED"]),
        st.sampled_from(CUSTOMERS),
        st.integers(15, 240),
    )
    return st.dictionaries(st.integers(1, 9), content, max_size=4).map(
        lambda d: [BookingVersion(booking_id, v, *c) for v, c in d.items()]
    )


def customer_versions(customer_id: str) -> st.SearchStrategy[list[CustomerVersion]]:
    content = st.tuples(st.sampled_from(["Ann", "Ben", "Cy"]), st.sampled_from(["a@x", "b@x"]))
    return st.dictionaries(st.integers(1, 9), content, max_size=3).map(
        lambda d: [CustomerVersion(customer_id, v, *c) for v, c in d.items()]
    )


@st.composite
def scenarios(draw: st.DrawFn) -> list[list[Event] | StaffEdit]:
    events: list[Event] = []
    for booking_id in BOOKINGS:
        events += draw(booking_versions(booking_id))
    for customer_id in CUSTOMERS:
        events += draw(customer_versions(customer_id))
    duplicates = draw(st.lists(st.sampled_from(events), max_size=4)) if events else []
    shuffled = draw(st.permutations(events + duplicates))
    staff = st.builds(
        StaffEdit,
        st.sampled_from(BOOKINGS),
        st.text("abc ", max_size=5),
        st.sampled_from(["scheduled", "in_progress", "done"]),
    )
    steps: list[list[Event] | StaffEdit] = []
    while shuffled:
        size = draw(st.integers(1, 4))
        steps.append(shuffled[:size])
        shuffled = shuffled[size:]
        steps += draw(st.lists(staff, max_size=2))
    return steps


def message(event: Event, ids: dict[Event, ConsumedMessage]) -> ConsumedMessage:
    """The same event is the same message (same ce_id) every time it is delivered."""
    if event not in ids:
        if isinstance(event, BookingVersion):
            body = square_event(
                "booking.updated",
                entity_id=event.booking_id,
                version=event.version,
                customer_id=event.customer_id,
            )
            booking = body["data"]["object"]["booking"]
            booking["status"] = event.status
            booking["appointment_segments"][0]["duration_minutes"] = event.duration
        else:
            body = square_event(
                "customer.updated", entity_id=event.customer_id, version=event.version
            )
            body["data"]["object"]["customer"].update(
                given_name=event.name, family_name=None, email_address=event.email
            )
        ids[event] = consumed(body, TOPICS)
    return ids[event]


async def run(database_url: str, db: Conn, steps: list[list[Event] | StaffEdit]) -> None:
    engine = create_engine(database_url, pool_size=1)
    runtime = offline_runtime(engine, TOPICS)
    messages: dict[Event, ConsumedMessage] = {}
    last_edit: dict[str, StaffEdit] = {}
    try:
        for step in steps:
            if isinstance(step, StaffEdit):
                edited = db.execute(
                    "UPDATE jobs SET notes = %s, work_status = %s, checklist = %s"
                    " WHERE booking_id = %s",
                    (step.notes, step.work_status, json.dumps([step.notes]), step.booking_id),
                )
                if edited.rowcount:
                    last_edit[step.booking_id] = step
            else:
                outcome = await runtime.apply_batch([message(e, messages) for e in step])
                assert outcome.dead == []
    finally:
        await engine.dispose()
    check(db, list(messages), last_edit)


def check(db: Conn, events: list[Event], last_edit: dict[str, StaffEdit]) -> None:
    newest_customer: dict[str, CustomerVersion] = {}
    for c in (e for e in events if isinstance(e, CustomerVersion)):
        if (
            c.customer_id not in newest_customer
            or c.version > newest_customer[c.customer_id].version
        ):
            newest_customer[c.customer_id] = c
    for booking_id in BOOKINGS:
        versions = [
            e for e in events if isinstance(e, BookingVersion) and e.booking_id == booking_id
        ]
        row = job(db, booking_id)
        if not versions:
            assert row is None
            continue
        assert row is not None
        top = max(versions, key=lambda b: b.version)
        assert (row["booking_version"], row["status"]) == (top.version, top.status)
        assert (row["customer_id"], row["duration_minutes"]) == (top.customer_id, top.duration)
        customer = newest_customer.get(top.customer_id)
        expected_cache = (customer.name, customer.email) if customer else (None, None)
        assert (row["customer_name"], row["customer_email"]) == expected_cache
        edit = last_edit.get(booking_id)
        expected_staff = (
            (edit.notes, edit.work_status, [edit.notes]) if edit else (None, "scheduled", [])
        )
        assert (row["notes"], row["work_status"], row["checklist"]) == expected_staff


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=scenarios())
def test_final_state_is_newest_source_data_and_last_staff_edit(
    database_url: str, db: Conn, steps: list[list[Event] | StaffEdit]
) -> None:
    # One database for all examples: start each from empty tables.
    db.execute("TRUNCATE jobs, square_customers, consumer_dedupe, dead_letters")
    asyncio.run(run(database_url, db, steps))
