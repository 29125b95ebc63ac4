"""The jobs projection, through the runtime's `apply_batch` (no broker needed)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest

from consumers.errors import DeadLetterLimitError
from consumers.jobs import BookingChange, JobsProjection
from consumers.message import Applied, ConsumedMessage
from consumers.runtime import ConsumerConfig, ConsumerRuntime
from devkit.simulate import square_event
from tests.support.consumers import consumed, fresh_topics, job, offline_runtime
from tests.support.rows import scalar

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

    from consumers.jobs import JobsChange
    from tests.support.consumers import Conn

TOPICS = fresh_topics()


@pytest.fixture
def runtime(engine: AsyncEngine) -> ConsumerRuntime[Any]:
    return offline_runtime(engine, TOPICS)


def booking(booking_id: str, version: int, customer_id: str = "CUST1", **changes: Any) -> Any:
    event = square_event(
        "booking.updated" if version > 1 else "booking.created",
        entity_id=booking_id,
        version=version,
        customer_id=customer_id,
    )
    event["data"]["object"]["booking"].update(changes)
    return event


def customer(customer_id: str, version: int, kind: str = "updated", **changes: Any) -> Any:
    event = square_event(f"customer.{kind}", entity_id=customer_id, version=version)
    event["data"]["object"]["customer"].update(changes)
    return event


async def apply(runtime: ConsumerRuntime[Any], *events: Any) -> Any:
    return await runtime.apply_batch([consumed(e, TOPICS) for e in events])


STAFF_EDIT = """
    UPDATE jobs SET work_status = 'in_progress', checklist = '[{"item": "tyres", "done": true}]',
        status_history = '[{"status": "in_progress"}]', photos_meta = '[{"id": "p1"}]',
        receipt_photos = '[{"id": "r1"}]', post_completion_issue = 'scratch',
        payment = '{"paid": 120}', vehicle_info = '{"plate": "AB12"}', notes = 'gate code 42'
    WHERE booking_id = %s
"""
STAFF_VALUES = {
    "work_status": "in_progress",
    "checklist": [{"item": "tyres", "done": True}],
    "status_history": [{"status": "in_progress"}],
    "photos_meta": [{"id": "p1"}],
    "receipt_photos": [{"id": "r1"}],
    "post_completion_issue": "scratch",
    "payment": {"paid": 120},
    "vehicle_info": {"plate": "AB12"},
    "notes": "gate code 42",
}


async def test_booking_becomes_a_job(runtime: ConsumerRuntime[Any], db: Conn) -> None:
    event = booking("bk1", 1, start_at="2030-05-01T09:00:00Z")
    event["data"]["object"]["booking"]["appointment_segments"].append(
        {"duration_minutes": 30, "service_variation_id": "SV2", "team_member_id": "TM2"}
    )
    outcome = await apply(runtime, event)

    assert (outcome.applied, outcome.duplicates, outcome.dead) == (1, 0, [])
    row = job(db, "bk1")
    assert row is not None
    assert row["status"] == "ACCEPTED"
    assert row["start_at"].isoformat() == "2030-05-01T09:00:00+00:00"
    assert row["duration_minutes"] == 90
    assert row["service_variation_ids"] == ["GUN7HNQBH7ZRARYZN52E7O4B", "SV2"]
    assert row["team_member_id"] == "TMXUrsBWWcHTt79t"
    assert (row["customer_id"], row["location_id"], row["booking_version"]) == (
        "CUST1",
        "L8TZNMX9Q2Z5B",
        1,
    )
    assert (row["work_status"], row["checklist"], row["notes"]) == ("scheduled", [], None)


async def test_staff_fields_survive_later_booking_updates(
    runtime: ConsumerRuntime[Any], db: Conn
) -> None:
    await apply(runtime, booking("bk2", 1))
    db.execute(STAFF_EDIT, ("bk2",))

    await apply(runtime, booking("bk2", 2, start_at="2031-01-01T10:00:00Z", status="ACCEPTED"))
    cancelled = booking("bk2", 3, start_at="2031-01-01T10:00:00Z", status="CANCELLED_BY_CUSTOMER")
    await apply(runtime, cancelled)

    row = job(db, "bk2")
    assert row is not None
    assert (row["status"], row["booking_version"]) == ("CANCELLED_BY_CUSTOMER", 3)
    assert row["start_at"].year == 2031
    assert {k: row[k] for k in STAFF_VALUES} == STAFF_VALUES


async def test_lower_version_never_overwrites_higher(
    runtime: ConsumerRuntime[Any], db: Conn
) -> None:
    await apply(runtime, booking("bk3", 3, status="ACCEPTED"))
    await apply(runtime, booking("bk3", 2, status="PENDING"), booking("bk3", 1, status="PENDING"))
    row = job(db, "bk3")
    assert row is not None
    assert (row["status"], row["booking_version"]) == ("ACCEPTED", 3)


async def test_same_event_twice_has_one_effect(runtime: ConsumerRuntime[Any], db: Conn) -> None:
    message = consumed(booking("bk4", 1), TOPICS)
    first = await runtime.apply_batch([message, message])  # twice in one batch
    xmin = scalar(db, "SELECT xmin::text FROM jobs WHERE booking_id = 'bk4'")
    again = await runtime.apply_batch([message])  # redelivered later

    assert (first.applied, first.duplicates) == (1, 1)
    assert (again.applied, again.duplicates) == (0, 1)
    assert scalar(db, "SELECT xmin::text FROM jobs WHERE booking_id = 'bk4'") == xmin
    assert scalar(db, "SELECT count(*) FROM consumer_dedupe WHERE consumer = 'jobs'") == 1


async def test_customer_before_booking_is_not_lost(runtime: ConsumerRuntime[Any], db: Conn) -> None:
    await apply(runtime, customer("CUST5", 1, "created", given_name="Grace", family_name="Hopper"))
    await apply(runtime, booking("bk5", 1, customer_id="CUST5"))
    row = job(db, "bk5")
    assert row is not None
    assert (row["customer_name"], row["customer_email"], row["customer_phone"]) == (
        "Grace Hopper",
        "amelia.earhart@example.com",
        "+1-212-555-4240",
    )


async def test_customer_update_refreshes_its_jobs_in_version_order(
    runtime: ConsumerRuntime[Any], db: Conn
) -> None:
    await apply(runtime, booking("bk6a", 1, customer_id="CUST6"), booking("bk6b", 1, "CUST6"))
    await apply(runtime, customer("CUST6", 2, email_address="new@example.com"))
    await apply(runtime, customer("CUST6", 1, email_address="old@example.com"))
    for booking_id in ("bk6a", "bk6b"):
        row = job(db, booking_id)
        assert row is not None
        assert row["customer_email"] == "new@example.com"


async def test_deleted_customer_keeps_job_data(runtime: ConsumerRuntime[Any], db: Conn) -> None:
    await apply(runtime, customer("CUST7", 1, "created"), booking("bk7", 1, customer_id="CUST7"))
    db.execute(STAFF_EDIT, ("bk7",))
    await apply(runtime, customer("CUST7", 2, "deleted"))
    await apply(runtime, customer("CUST7", 1, "updated"))  # a late, older update

    assert scalar(db, "SELECT deleted_at IS NOT NULL FROM square_customers") is True
    row = job(db, "bk7")
    assert row is not None
    assert (row["customer_id"], row["customer_name"]) == ("CUST7", "Amelia Earhart")
    assert {k: row[k] for k in STAFF_VALUES} == STAFF_VALUES


async def test_merge_moves_jobs_to_the_surviving_customer(
    runtime: ConsumerRuntime[Any], db: Conn
) -> None:
    await apply(
        runtime,
        customer("OLD1", 1, "created", given_name="Old"),
        booking("bk8a", 1, customer_id="OLD1"),
        booking("bk8b", 1, customer_id="OLD2"),
    )
    merged = customer("SURV", 1, "created", given_name="Survivor", family_name="")
    merged["data"]["object"]["event_context"] = {
        "merge": {"from_customer_ids": ["OLD1", "OLD2"], "to_customer_id": "SURV"}
    }
    await apply(runtime, merged)
    # A later booking event that still names a merged-away customer lands on the survivor.
    await apply(runtime, booking("bk8b", 2, customer_id="OLD2"), booking("bk8c", 1, "OLD1"))

    for booking_id in ("bk8a", "bk8b", "bk8c"):
        row = job(db, booking_id)
        assert row is not None
        assert (row["customer_id"], row["customer_name"]) == ("SURV", "Survivor")
    rows = db.execute(
        "SELECT customer_id, merged_into, deleted_at IS NOT NULL FROM square_customers"
        " WHERE merged_into IS NOT NULL ORDER BY 1"
    ).fetchall()
    assert rows == [("OLD1", "SURV", True), ("OLD2", "SURV", True)]


async def test_a_booking_follows_chained_merges_to_the_last_survivor(
    runtime: ConsumerRuntime[Any], db: Conn
) -> None:
    def merge(into: str, version: int, *merged_away: str) -> dict[str, Any]:
        event: dict[str, Any] = customer(
            into, version, "updated", given_name=into.title(), family_name=""
        )
        event["data"]["object"]["event_context"] = {
            "merge": {"from_customer_ids": list(merged_away), "to_customer_id": into}
        }
        return event

    await apply(runtime, merge("MID", 1, "FIRST"))
    await apply(runtime, merge("LAST", 1, "MID"))
    # Named by its first id, twice over merged away: the job lands on the last survivor.
    await apply(runtime, booking("bk8d", 1, customer_id="FIRST"), booking("bk8e", 1, "OTHER"))
    first, other = job(db, "bk8d"), job(db, "bk8e")
    assert first is not None
    assert other is not None
    assert (first["customer_id"], first["customer_name"]) == ("LAST", "Last")
    assert (other["customer_id"], other["customer_name"]) == ("OTHER", None)


async def test_poison_messages_are_dead_lettered_and_the_rest_applied(
    runtime: ConsumerRuntime[Any], db: Conn
) -> None:
    good = consumed(booking("bk9", 1), TOPICS, offset=0)
    not_json = ConsumedMessage(TOPICS[0], 0, 1, b"k", b"{not json", ((("ce_id", b"x1")),))
    no_booking = booking("bk9b", 1)
    del no_booking["data"]["object"]["booking"]
    # A NUL character: valid JSON, refused by PostgreSQL only when the batch is written.
    db_refuses = consumed(booking("bk9c", 1, status="BAD\u0000"), TOPICS, offset=3)
    other = consumed(booking("bk9d", 1), TOPICS, offset=4)

    outcome = await runtime.apply_batch(
        [good, not_json, consumed(no_booking, TOPICS, offset=2), db_refuses, other]
    )

    assert outcome.applied == 2
    assert sorted(d.message.offset for d in outcome.dead) == [1, 2, 3]
    assert job(db, "bk9") is not None
    assert job(db, "bk9d") is not None
    rows = db.execute(
        "SELECT \"offset\", error_type, headers->>'ce_id' FROM dead_letters ORDER BY 1"
    ).fetchall()
    assert [(r[0], r[1]) for r in rows] == [
        (1, "InvalidMessageError"),
        (2, "InvalidMessageError"),
        (3, "DatabaseRefusedError"),
    ]
    assert rows[0][2] == "x1"
    refused = outcome.dead[2]
    assert not refused.bug
    assert "UntranslatableCharacter" in refused.error_text  # the driver's own verdict, kept
    # The poisoned message left no dedupe record: fixed and replayed, it would apply.
    assert scalar(db, "SELECT count(*) FROM consumer_dedupe") == 2


class BuggyJobs(JobsProjection):
    """The jobs projection with a bug that only one booking's data reaches: it writes the row,
    then trips over its own code (not the message's fault)."""

    async def apply(self, conn: AsyncConnection, items: Sequence[JobsChange]) -> Applied:
        applied = await super().apply(conn, items)
        for item in items:
            if isinstance(item, BookingChange) and item.row["booking_id"].startswith("bkBUG"):
                _ = item.row["no such column"]  # KeyError: a bug in the projection
        return applied


async def test_a_bug_in_a_projection_is_dead_lettered_as_a_bug_and_logged(
    engine: AsyncEngine, db: Conn, capsys: pytest.CaptureFixture[str]
) -> None:
    config = ConsumerConfig(bootstrap_servers="unused:9092", group_id="unused")
    runtime = ConsumerRuntime(BuggyJobs(TOPICS), engine, config)
    # One message the database refuses (invalid input), one the code trips over (a bug).
    refused = consumed(booking("bk20a", 1, status="BAD\u0000"), TOPICS, offset=0)
    buggy = consumed(booking("bkBUG1", 1), TOPICS, offset=1)
    good = consumed(booking("bk20b", 1), TOPICS, offset=2)
    capsys.readouterr()

    outcome = await runtime.apply_batch([refused, buggy, good])

    assert outcome.applied == 1
    assert job(db, "bk20b") is not None
    assert job(db, "bkBUG1") is None  # its savepoint was rolled back with it
    rows = db.execute('SELECT "offset", error_type FROM dead_letters ORDER BY 1').fetchall()
    assert rows == [(0, "DatabaseRefusedError"), (1, "bug:KeyError")]
    letters = {d.message.offset: d for d in outcome.dead}
    assert (letters[0].bug, letters[1].bug) == (False, True)
    headers = dict(letters[1].dlq_headers("jobs"))
    assert headers["dlq_error_type"] == b"bug:KeyError"
    assert dict(letters[0].dlq_headers("jobs"))["dlq_error_type"] == b"DatabaseRefusedError"
    # No dedupe record for either: fixed and redriven, they would apply.
    assert scalar(db, "SELECT count(*) FROM consumer_dedupe") == 1

    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line]
    bugs = [line for line in lines if line["event"] == "consumer.bug"]
    assert len(bugs) == 1
    (bug,) = bugs
    assert (bug["level"], bug["offset"], bug["error_type"]) == ("error", 1, "KeyError")
    assert "Traceback" in bug["exception"]
    assert "no such column" in bug["exception"]
    assert not any(line["event"] == "consumer.bug" and line["offset"] == 0 for line in lines)


async def test_bugs_count_against_the_dead_letter_limit(engine: AsyncEngine, db: Conn) -> None:
    config = ConsumerConfig(
        bootstrap_servers="unused:9092", group_id="unused", dlq_max_ratio=0.2, dlq_window=10
    )
    runtime = ConsumerRuntime(BuggyJobs(TOPICS), engine, config)
    batch = [consumed(booking(f"bkBUG{i}", 1), TOPICS, offset=i) for i in range(3)]

    with pytest.raises(DeadLetterLimitError, match="3 of the last"):
        await runtime.apply_batch([*batch, consumed(booking("bk21", 1), TOPICS, offset=3)])

    assert scalar(db, "SELECT count(*) FROM dead_letters") == 0
    assert job(db, "bk21") is None


async def test_dead_letter_limit_stops_before_committing(engine: AsyncEngine, db: Conn) -> None:
    config = ConsumerConfig(
        bootstrap_servers="unused:9092", group_id="unused", dlq_max_ratio=0.2, dlq_window=10
    )
    runtime = ConsumerRuntime(JobsProjection(TOPICS), engine, config)
    garbage = [
        ConsumedMessage(TOPICS[0], 0, i, None, json.dumps({"x": i}).encode()) for i in range(3)
    ]

    with pytest.raises(DeadLetterLimitError, match="3 of the last"):
        await runtime.apply_batch([consumed(booking("bk10", 1), TOPICS), *garbage])

    assert scalar(db, "SELECT count(*) FROM dead_letters") == 0
    assert job(db, "bk10") is None


async def test_cache_follows_the_booking_to_another_customer(
    runtime: ConsumerRuntime[Any], db: Conn
) -> None:
    await apply(runtime, customer("CUST11", 1), booking("bk11", 1, customer_id="CUST11"))
    # The booking moves to a customer not seen yet, in the same batch as an update of the old one.
    await apply(runtime, booking("bk11", 2, customer_id="CUST12"), customer("CUST11", 2))
    row = job(db, "bk11")
    assert row is not None
    assert (row["customer_id"], row["customer_name"], row["customer_email"]) == (
        "CUST12",
        None,
        None,
    )

    await apply(runtime, customer("CUST12", 1, given_name="Lin", family_name=None))
    row = job(db, "bk11")
    assert row is not None
    assert row["customer_name"] == "Lin"
