"""Who owns which column of each projection table. Consumers write through consumers/upsert.py,
which refuses any column not declared source-owned here.
"""

from __future__ import annotations

from schemas.ownership import CachedColumns, Ownership, Redirect, SourceColumn
from schemas.tables import Base, Job, SquareCustomer

SQUARE_CUSTOMERS = Ownership(
    table=Base.metadata.tables[SquareCustomer.__tablename__],
    key="customer_id",
    version="version",
    source=(
        SourceColumn("display_name", "customer.given_name + family_name (else company_name)"),
        SourceColumn("email_address", "customer.email_address"),
        SourceColumn("phone_number", "customer.phone_number"),
        SourceColumn("version", "customer.version"),
        SourceColumn("source_updated_at", "customer.updated_at"),
        SourceColumn("deleted_at", "created_at of the customer.deleted event", sticky=True),
        SourceColumn("merged_into", "event_context.merge.to_customer_id", sticky=True),
    ),
    app=(),
)

JOBS = Ownership(
    table=Base.metadata.tables[Job.__tablename__],
    key="booking_id",
    version="booking_version",
    source=(
        SourceColumn("status", "booking.status"),
        SourceColumn("start_at", "booking.start_at"),
        SourceColumn("duration_minutes", "sum of booking.appointment_segments[].duration_minutes"),
        SourceColumn(
            "service_variation_ids", "booking.appointment_segments[].service_variation_id"
        ),
        SourceColumn("team_member_id", "booking.appointment_segments[0].team_member_id"),
        SourceColumn("location_id", "booking.location_id"),
        SourceColumn(
            "customer_id",
            "booking.customer_id, followed through customer merges",
            follows=Redirect(SquareCustomer.__tablename__, "customer_id", "merged_into"),
        ),
        SourceColumn("booking_version", "booking.version"),
        SourceColumn("source_updated_at", "booking.updated_at"),
    ),
    cached=(
        CachedColumns(
            table=SquareCustomer.__tablename__,
            join=("customer_id", "customer_id"),
            columns=(
                ("customer_name", "display_name"),
                ("customer_email", "email_address"),
                ("customer_phone", "phone_number"),
            ),
            ready="version",
        ),
    ),
    app=(
        "work_status",
        "checklist",
        "status_history",
        "photos_meta",
        "receipt_photos",
        "post_completion_issue",
        "payment",
        "vehicle_info",
        "notes",
    ),
)
