from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pytest

from consumers.upsert import upsert, upsert_statement
from schemas.leads import LEADS
from schemas.ownership import Ownership, OwnershipError
from schemas.projections import JOBS, SQUARE_CUSTOMERS
from sluice.db import transaction
from tests.support.rows import scalar

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sqlalchemy.ext.asyncio import AsyncEngine

    from tests.support.consumers import Conn


async def write(engine: AsyncEngine, rows: Sequence[dict[str, Any]]) -> set[str]:
    async with transaction(engine) as conn:
        return await upsert(conn, SQUARE_CUSTOMERS, rows)


def customer(db: Conn, customer_id: str) -> tuple[Any, ...]:
    row = db.execute(
        "SELECT display_name, email_address, version, deleted_at FROM square_customers"
        " WHERE customer_id = %s",
        (customer_id,),
    ).fetchone()
    assert row is not None
    return tuple(row)


def test_app_owned_columns_cannot_be_written() -> None:
    with pytest.raises(OwnershipError, match=r"jobs\.notes is app-owned"):
        upsert_statement(JOBS, frozenset({"booking_version", "notes"}))
    with pytest.raises(OwnershipError, match="customer_name is not a source column"):
        upsert_statement(JOBS, frozenset({"booking_version", "customer_name"}))


def test_every_column_needs_exactly_one_owner() -> None:
    with pytest.raises(OwnershipError, match=r"undeclared: \['notes'\]"):
        Ownership(
            table=JOBS.table,
            key=JOBS.key,
            version=JOBS.version,
            source=JOBS.source,
            app=tuple(c for c in JOBS.app if c != "notes"),
            cached=JOBS.cached,
        )
    with pytest.raises(OwnershipError, match="version column must be source-owned"):
        Ownership(
            table=JOBS.table,
            key=JOBS.key,
            version="customer_name",
            source=JOBS.source,
            app=JOBS.app,
            cached=JOBS.cached,
        )


def test_generated_upsert_names_only_the_given_columns() -> None:
    sql = str(upsert_statement(JOBS, frozenset({"booking_version", "status"})))
    assert "status = EXCLUDED.status" in sql
    assert "t.booking_version IS NULL OR EXCLUDED.booking_version > t.booking_version" in sql
    for app_column in JOBS.app:
        assert app_column not in sql


async def test_partial_change_writes_only_its_columns_and_respects_version(
    engine: AsyncEngine, db: Conn
) -> None:
    full = {
        "customer_id": "C1",
        "display_name": "Ada",
        "email_address": "ada@example.com",
        "phone_number": None,
        "version": 2,
        "source_updated_at": datetime(2025, 1, 1, tzinfo=UTC),
        "deleted_at": None,
    }
    assert await write(engine, [full]) == {"C1"}

    assert await write(engine, [{"customer_id": "C1", "display_name": "Ada L.", "version": 3}])
    assert customer(db, "C1") == ("Ada L.", "ada@example.com", 3, None)

    # An older change of the same field arrives late: ignored.
    assert (
        await write(engine, [{"customer_id": "C1", "display_name": "Old", "version": 1}]) == set()
    )
    # Square's versions are the object's own: one at the row's version is a repeat, ignored.
    assert (
        await write(engine, [{"customer_id": "C1", "display_name": "Tie", "version": 3}]) == set()
    )
    assert customer(db, "C1") == ("Ada L.", "ada@example.com", 3, None)


async def test_sticky_column_is_kept_whatever_the_version(engine: AsyncEngine, db: Conn) -> None:
    deleted = datetime(2025, 2, 1, tzinfo=UTC)
    # A deletion with no version may arrive first: a placeholder row holds it.
    await write(engine, [{"customer_id": "C2", "deleted_at": deleted}])
    await write(
        engine,
        [{"customer_id": "C2", "display_name": "Bo", "version": 1, "deleted_at": None}],
    )
    assert customer(db, "C2") == ("Bo", None, 1, deleted)
    later = datetime(2025, 3, 1, tzinfo=UTC)
    await write(
        engine,
        [{"customer_id": "C2", "display_name": "Bob", "version": 2, "deleted_at": later}],
    )
    assert customer(db, "C2") == ("Bob", None, 2, deleted)
    assert scalar(db, "SELECT count(*) FROM square_customers") == 1


def test_plain_columns_need_the_version() -> None:
    with pytest.raises(OwnershipError, match="needs the version column"):
        upsert_statement(SQUARE_CUSTOMERS, frozenset({"display_name"}))


async def test_a_snapshot_applies_only_while_the_row_is_at_its_version(
    engine: AsyncEngine, db: Conn
) -> None:
    def lead(version: int, **columns: Any) -> dict[str, Any]:
        return {"record_id": "rec1", "airtable_txn": version, **columns}

    async def write_lead(row: dict[str, Any], *, snapshot: bool = False) -> set[str]:
        async with transaction(engine) as conn:
            return await upsert(conn, LEADS, [row], snapshot=snapshot)

    def name_version_deleted() -> tuple[Any, ...]:
        row = db.execute(
            "SELECT full_name, airtable_txn, deleted_at FROM leads WHERE record_id = 'rec1'"
        ).fetchone()
        assert row is not None
        return tuple(row)

    frame = {"base_id": "app1", "table_id": "tbl1"}
    await write_lead(lead(5, full_name="Ada", **frame))
    # Leads merge ties: a change at the row's own version is another part of the same Airtable
    # action, and its cells join the row's; a repeat changes nothing, an older change loses.
    assert await write_lead(lead(5, full_name="Ada", **frame)) == set()
    assert await write_lead(lead(5, company="ACME", **frame)) == {"rec1"}
    assert await write_lead(lead(4, full_name="Old", **frame)) == set()
    assert db.execute("SELECT company FROM leads WHERE record_id = 'rec1'").fetchone() == ("ACME",)
    # A snapshot taken while the row was at 5 applies: a tie.
    assert await write_lead(lead(5, full_name="Ada L.", **frame), snapshot=True) == {"rec1"}
    assert name_version_deleted() == ("Ada L.", 5, None)
    # A change landed meanwhile: a snapshot still carrying 5 loses, its sticky column too.
    await write_lead(lead(6, full_name="Ada Lovelace", **frame))
    gone = datetime(2025, 4, 1, tzinfo=UTC)
    assert await write_lead(lead(5, full_name="Old", **frame), snapshot=True) == set()
    assert await write_lead(lead(5, deleted_at=gone, **frame), snapshot=True) == set()
    assert name_version_deleted() == ("Ada Lovelace", 6, None)
    assert await write_lead(lead(6, deleted_at=gone, **frame), snapshot=True) == {"rec1"}
    assert name_version_deleted() == ("Ada Lovelace", 6, gone)


def test_a_snapshot_needs_the_version() -> None:
    assert ">= t.airtable_txn" in str(
        upsert_statement(LEADS, frozenset({"airtable_txn", "full_name"}), snapshot=True)
    )
    with pytest.raises(OwnershipError, match="a snapshot needs the version column"):
        upsert_statement(LEADS, frozenset({"deleted_at"}), snapshot=True)


async def test_an_upsert_copies_the_cache_of_the_row_it_points_at(
    engine: AsyncEngine, db: Conn
) -> None:
    ada = {"customer_id": "C7", "display_name": "Ada", "email_address": "a@x.io", "version": 1}
    await write(engine, [ada])
    await write(engine, [{"customer_id": "C8", "deleted_at": datetime(2025, 1, 1, tzinfo=UTC)}])

    async def write_job(version: int, customer_id: str, status: str = "ACCEPTED") -> set[str]:
        row = {"booking_id": "B7", "booking_version": version, "customer_id": customer_id}
        async with transaction(engine) as conn:
            return await upsert(conn, JOBS, [{**row, "status": status}])

    def cache() -> tuple[Any, ...]:
        row = db.execute(
            "SELECT customer_name, customer_email, status FROM jobs WHERE booking_id = 'B7'"
        ).fetchone()
        assert row is not None
        return tuple(row)

    assert await write_job(1, "C7") == {"B7"}
    assert cache() == ("Ada", "a@x.io", "ACCEPTED")
    # An older change pointing elsewhere loses, its cache with it.
    assert await write_job(0, "C8") == set()
    assert cache() == ("Ada", "a@x.io", "ACCEPTED")
    # C8 is only a placeholder (no version): the cache mirrors it as empty, not as Ada.
    assert await write_job(2, "C8", "CANCELLED_BY_CUSTOMER") == {"B7"}
    assert cache() == (None, None, "CANCELLED_BY_CUSTOMER")
    # A change that does not carry the join column leaves the cache alone.
    await write_job(3, "C7")
    async with transaction(engine) as conn:
        await upsert(conn, JOBS, [{"booking_id": "B7", "booking_version": 4, "status": "X"}])
    assert cache() == ("Ada", "a@x.io", "X")


def test_a_cache_joins_on_a_plain_source_column() -> None:
    group = JOBS.cached[0]
    with pytest.raises(OwnershipError, match="a cache joins on a plain column"):
        Ownership(
            table=JOBS.table,
            key=JOBS.key,
            version=JOBS.version,
            source=JOBS.source,
            app=JOBS.app,
            cached=(replace(group, join=("notes", group.join[1])),),
        )
