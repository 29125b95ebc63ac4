"""The jobs projection: Square bookings become jobs; Square customers feed the jobs' customer cache.

Every write goes through consumers/upsert.py with the declarations in schemas/projections.py, so
only source-owned columns are ever written and a lower version never overwrites a higher one.

- booking.created / booking.updated: upsert the job (a cancellation is just a status); the same
  statement follows the customer id through any merges (A into B, later B into C) and copies the
  customer cache from square_customers.
- customer.created / customer.updated: upsert square_customers, then refresh the cache on that
  customer's jobs. A customer that arrives before its bookings waits in square_customers.
- customer.deleted: the customer is marked deleted (sticky); jobs keep the data they hold.
- a merge (`event_context.merge`): the merged-away customers are marked merged into the survivor
  and deleted, their jobs are re-pointed to the survivor, and the cache is refreshed from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from consumers.errors import InvalidMessageError
from consumers.message import Applied, Decoded
from consumers.upsert import refresh_cached, repoint, superseded_rows, upsert, upsert_newest
from schemas.projections import JOBS, SQUARE_CUSTOMERS
from schemas.square_objects import CustomerMerge, SquareChange, SquareChangeEvent
from schemas.topics import CONSUMER_TOPICS

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from datetime import datetime

    from sqlalchemy.ext.asyncio import AsyncConnection

    from consumers.message import ConsumedMessage


@dataclass(frozen=True, slots=True)
class BookingChange:
    row: dict[str, Any]  # jobs columns, as declared source-owned in JOBS


@dataclass(frozen=True, slots=True)
class CustomerChange:
    customer_id: str
    row: dict[str, Any] | None  # square_customers columns; None for a bare deletion
    deleted_at: datetime | None
    merge: CustomerMerge | None
    occurred_at: datetime


JobsChange = BookingChange | CustomerChange


class JobsProjection:
    def __init__(
        self,
        topics: Sequence[str] = CONSUMER_TOPICS["jobs"],
    ) -> None:
        self._topics = tuple(topics)

    @property
    def name(self) -> str:
        return "jobs"

    @property
    def topics(self) -> tuple[str, ...]:
        return self._topics

    def decode(self, message: ConsumedMessage) -> Decoded[JobsChange] | None:
        if message.value is None:
            raise InvalidMessageError("message has no value")
        try:
            event = SquareChangeEvent.model_validate_json(message.value)
        except ValidationError as exc:
            raise InvalidMessageError(f"not a Square change event: {exc}") from exc
        event_id = message.header("ce_id") or event.id
        change = event.data
        entity = change.data.type
        if entity == "booking":
            return Decoded(event_id, _booking_change(change))
        if entity == "customer":
            return Decoded(event_id, _customer_change(change))
        return None  # another Square entity: not this projection's business

    async def apply(self, conn: AsyncConnection, items: Sequence[JobsChange]) -> Applied:
        customers = [(n, i) for n, i in enumerate(items) if isinstance(i, CustomerChange)]
        bookings = [(n, i) for n, i in enumerate(items) if isinstance(i, BookingChange)]
        stale: dict[int, dict[str, Any]] = {}
        # Customers first, so bookings in the same batch pick up their fresh cache.
        if customers:
            stale |= await _apply_customers(conn, customers)
        if bookings:
            stale |= await _apply_bookings(conn, bookings)
        return Applied(stale=stale)

    def superseded(self, items: Sequence[JobsChange]) -> dict[int, dict[str, Any]]:
        """The changes a newer one of the same booking or customer in `items` leaves stale."""
        customers = [
            (n, i.row)
            for n, i in enumerate(items)
            if isinstance(i, CustomerChange) and i.row is not None
        ]
        bookings = [(n, i.row) for n, i in enumerate(items) if isinstance(i, BookingChange)]
        found: dict[int, dict[str, Any]] = {}
        for ownership, indexed in ((SQUARE_CUSTOMERS, customers), (JOBS, bookings)):
            stale = superseded_rows(ownership, [row for _, row in indexed])
            found |= {indexed[i][0]: why for i, why in stale.items()}
        return found


def _booking_change(change: SquareChange) -> BookingChange:
    obj = change.data.object
    booking = obj.booking if obj is not None else None
    if booking is None:
        raise InvalidMessageError(f"{change.type} without data.object.booking")
    segments = booking.appointment_segments
    durations = [s.duration_minutes for s in segments if s.duration_minutes is not None]
    return BookingChange(
        {
            "booking_id": booking.id,
            "status": booking.status,
            "start_at": booking.start_at,
            "duration_minutes": sum(durations) if durations else None,
            "service_variation_ids": [
                s.service_variation_id for s in segments if s.service_variation_id
            ],
            "team_member_id": next((s.team_member_id for s in segments if s.team_member_id), None),
            "location_id": booking.location_id,
            "customer_id": booking.customer_id,
            "booking_version": booking.version,
            "source_updated_at": booking.updated_at,
        }
    )


def _customer_change(change: SquareChange) -> CustomerChange:
    obj = change.data.object
    customer = obj.customer if obj is not None else None
    deleted = bool(change.data.deleted) or change.type == "customer.deleted"
    deleted_at = change.created_at if deleted else None
    row: dict[str, Any] | None = None
    if customer is not None and customer.version is not None:
        row = {
            "customer_id": customer.id,
            "display_name": customer.display_name,
            "email_address": customer.email_address,
            "phone_number": customer.phone_number,
            "version": customer.version,
            "source_updated_at": customer.updated_at,
            "deleted_at": deleted_at,
        }
    elif not deleted:
        raise InvalidMessageError(f"{change.type} without a versioned data.object.customer")
    merge = obj.event_context.merge if obj is not None and obj.event_context else None
    return CustomerChange(
        customer_id=customer.id if customer is not None else change.data.id,
        row=row,
        deleted_at=deleted_at,
        merge=merge,
        occurred_at=change.created_at,
    )


def _first_per_key(key: str, rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    first: dict[Any, dict[str, Any]] = {}
    for row in rows:
        first.setdefault(row[key], row)
    return list(first.values())


async def _apply_customers(
    conn: AsyncConnection, indexed: Sequence[tuple[int, CustomerChange]]
) -> dict[int, dict[str, Any]]:
    """Returns the stale changes by their position in the batch."""
    key = SQUARE_CUSTOMERS.key
    changes = [c for _, c in indexed]
    versioned = [(n, c.row) for n, c in indexed if c.row is not None]
    stale = await upsert_newest(conn, SQUARE_CUSTOMERS, [row for _, row in versioned])
    touched = {row[key] for i, (_, row) in enumerate(versioned) if i not in stale}
    bare_deletions = _first_per_key(
        key,
        (
            {key: c.customer_id, "deleted_at": c.deleted_at}
            for c in changes
            if c.row is None and c.deleted_at is not None
        ),
    )
    await upsert(conn, SQUARE_CUSTOMERS, bare_deletions)

    for change in changes:
        merge = change.merge
        if merge is None:
            continue
        merged_away = [c for c in merge.from_customer_ids if c != merge.to_customer_id]
        marks = _first_per_key(
            key,
            (
                {key: c, "merged_into": merge.to_customer_id, "deleted_at": change.occurred_at}
                for c in merged_away
            ),
        )
        await upsert(conn, SQUARE_CUSTOMERS, marks)
        await repoint(conn, JOBS, "customer_id", merged_away, merge.to_customer_id)
        touched.add(merge.to_customer_id)
    await refresh_cached(conn, JOBS, "customer_id", touched)
    return {versioned[i][0]: why for i, why in stale.items()}


async def _apply_bookings(
    conn: AsyncConnection, indexed: Sequence[tuple[int, BookingChange]]
) -> dict[int, dict[str, Any]]:
    """Returns the stale changes by their position in the batch."""
    # The upsert follows customer merges (JOBS declares customer_id a redirect) and copies the
    # customer cache, all in one statement.
    stale = await upsert_newest(conn, JOBS, [c.row for _, c in indexed])
    return {indexed[i][0]: why for i, why in stale.items()}
