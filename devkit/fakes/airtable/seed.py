"""Seed data for the fake Airtable: the Leads table the default mapping (schemas/leads.py)
expects, as a sales team would have it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from devkit.fakes.airtable.model import AirtableModel, FakeTable

LEADS_TABLE = "Leads"
LEADS_FIELDS: list[tuple[str, str] | tuple[str, str, dict[str, Any]]] = [
    ("Full Name", "singleLineText"),
    ("First Name", "singleLineText"),
    ("Last Name", "singleLineText"),
    ("Email", "email"),
    ("Phone", "phoneNumber"),
    ("Company", "singleLineText"),
    ("Job Title", "singleLineText"),
    ("City", "singleLineText"),
    ("State", "singleLineText"),
    ("Lead Source", "singleLineText"),
    ("Campaign", "singleLineText"),
    (
        "Lead Status",
        "singleSelect",
        {
            "choices": [
                {"id": "selNew00000000001", "name": "New", "color": "blueLight2"},
                {"id": "selContacted00001", "name": "Contacted", "color": "yellowLight2"},
                {"id": "selQualified00001", "name": "Qualified", "color": "greenLight2"},
                {"id": "selLost0000000001", "name": "Lost", "color": "redLight2"},
            ]
        },
    ),
    ("SMS Sequence Step", "number", {"precision": 0}),
    ("SMS Sent Count", "number", {"precision": 0}),
    ("Last SMS Sent At", "dateTime"),
    ("Opted Out", "checkbox", {"icon": "check", "color": "greenBright"}),
    ("Claimed By", "singleLineText"),
    ("Claimed At", "dateTime"),
    ("Notes", "multilineText"),
]


def add_leads_table(fake: AirtableModel, base_id: str) -> FakeTable:
    """The leads table the default mapping expects, as a sales team would have it."""
    fields: list[tuple[str, str] | tuple[str, str, dict[str, Any]]] = []
    for spec in LEADS_FIELDS:
        if spec[1] == "dateTime":
            options = {
                "dateFormat": {"name": "iso", "format": "YYYY-MM-DD"},
                "timeFormat": {"name": "24hour", "format": "HH:mm"},
                "timeZone": "utc",
            }
            fields.append((spec[0], spec[1], options))
        else:
            fields.append(spec)
    return fake.add_table(base_id, LEADS_TABLE, fields)
