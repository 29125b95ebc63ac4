"""The leads projection: its column ownership, and the default Airtable mapping that feeds it.

Airtable owns the identity, contact and campaign columns; the app owns `claimed_by`,
`claimed_at` and `notes` (staff work, pushed back to Airtable by the app, never overwritten by
a sync). Rows are ordered by Airtable's base transaction number, which several payloads of one
action may share (merged, cell by cell); a destroyed record keeps its row, with `deleted_at`
set, so the staff data on it survives.
"""

from __future__ import annotations

from schemas.airtable_mapping import FieldMapping, TableMapping, as_bool, as_int, as_timestamp
from schemas.ownership import Ownership, SourceColumn
from schemas.tables import Lead

LEADS = Ownership(
    table=Lead.__table__,  # type: ignore[arg-type]
    key="record_id",
    version="airtable_txn",
    source=(
        SourceColumn("base_id", "the webhook's base"),
        SourceColumn("table_id", "the payload's table"),
        SourceColumn("full_name", "Full Name"),
        SourceColumn("first_name", "First Name"),
        SourceColumn("last_name", "Last Name"),
        SourceColumn("email", "Email"),
        SourceColumn("phone", "Phone"),
        SourceColumn("company", "Company"),
        SourceColumn("job_title", "Job Title"),
        SourceColumn("city", "City"),
        SourceColumn("state", "State"),
        SourceColumn("lead_source", "Lead Source"),
        SourceColumn("campaign", "Campaign"),
        SourceColumn("lead_status", "Lead Status"),
        SourceColumn("sms_sequence_position", "SMS Sequence Step"),
        SourceColumn("sms_sent_count", "SMS Sent Count"),
        SourceColumn("last_sms_sent_at", "Last SMS Sent At"),
        SourceColumn("opted_out", "Opted Out"),
        SourceColumn("airtable_created_at", "the record's createdTime"),
        SourceColumn("airtable_txn", "payload baseTransactionNumber"),
        SourceColumn(
            "deleted_at", "timestamp of the payload that destroyed the record", sticky=True
        ),
    ),
    app=("claimed_by", "claimed_at", "notes"),
    merge_ties=True,
)

LEADS_MAPPING = TableMapping(
    table="Leads",
    ownership=LEADS,
    fields=(
        FieldMapping("full_name", "Full Name"),
        FieldMapping("first_name", "First Name"),
        FieldMapping("last_name", "Last Name"),
        FieldMapping("email", "Email"),
        FieldMapping("phone", "Phone"),
        FieldMapping("company", "Company"),
        FieldMapping("job_title", "Job Title"),
        FieldMapping("city", "City"),
        FieldMapping("state", "State"),
        FieldMapping("lead_source", "Lead Source"),
        FieldMapping("campaign", "Campaign"),
        FieldMapping("lead_status", "Lead Status"),
        FieldMapping("sms_sequence_position", "SMS Sequence Step", as_int),
        FieldMapping("sms_sent_count", "SMS Sent Count", as_int),
        FieldMapping("last_sms_sent_at", "Last SMS Sent At", as_timestamp),
        FieldMapping("opted_out", "Opted Out", as_bool),
        # App-owned: where the app writes staff work back; never read from Airtable.
        FieldMapping("claimed_by", "Claimed By"),
        FieldMapping("claimed_at", "Claimed At", as_timestamp),
        FieldMapping("notes", "Notes"),
    ),
)

# Every Airtable table sluice projects. Tables not listed here are recorded, not projected.
AIRTABLE_MAPPINGS: tuple[TableMapping, ...] = (LEADS_MAPPING,)
