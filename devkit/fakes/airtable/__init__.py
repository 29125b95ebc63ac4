"""A fake Airtable Web API that pyairtable talks to unchanged: its data (`model`), the
Starlette app speaking Airtable's wire format (`http`), and the Leads table `sluice dev` and the
tests seed it with (`seed`)."""

from devkit.fakes.airtable.http import FakeAirtable
from devkit.fakes.airtable.model import (
    AirtableModel,
    FakeBase,
    FakeField,
    FakeRecord,
    FakeTable,
    FakeWebhook,
    airtable_id,
)
from devkit.fakes.airtable.seed import LEADS_FIELDS, LEADS_TABLE, add_leads_table
from devkit.fakes.faults import RecordedRequest

__all__ = [
    "LEADS_FIELDS",
    "LEADS_TABLE",
    "AirtableModel",
    "FakeAirtable",
    "FakeBase",
    "FakeField",
    "FakeRecord",
    "FakeTable",
    "FakeWebhook",
    "RecordedRequest",
    "add_leads_table",
    "airtable_id",
]
