"""`sluice doctor`: a deployment's settings and reachability, one verdict per line.

The checks (in the order printed) are listed here; commands/doctor.py adds the settings that
could not be loaded at all and decides the exit code.
"""

from __future__ import annotations

from recovery.doctor.findings import Finding, NamedCheck, fail, failed, run_checks
from recovery.doctor.infra import database, kafka
from recovery.doctor.providers import (
    airtable_key,
    airtable_webhooks,
    square_signatures,
    square_token,
)
from recovery.doctor.secrets import placeholders, tokens
from recovery.doctor.store import event_store

CHECKS: tuple[NamedCheck, ...] = (
    NamedCheck("database", database),
    NamedCheck("event store", event_store),
    NamedCheck("kafka", kafka),
    NamedCheck("Square webhook signatures", square_signatures),
    NamedCheck("Square token", square_token),
    NamedCheck("Airtable token", airtable_key),
    NamedCheck("Airtable webhooks", airtable_webhooks),
    NamedCheck("tokens", tokens),
    NamedCheck("placeholders", placeholders),
)

__all__ = ["CHECKS", "Finding", "NamedCheck", "fail", "failed", "run_checks"]
