"""The Airtable world the tests share: the fake API running, with one base holding a leads table
and one webhook, and the steps that move its changes into the projections."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import psycopg

from consumers.airtable_projection import MappingResolver, apply_record_changes
from ingest.airtable_api import AirtableClient, BaseRateLimiter
from ingest.airtable_fetch import fetch_webhook, register_webhook
from schemas.airtable import RecordEvent
from schemas.envelope import CloudEvent
from schemas.leads import AIRTABLE_MAPPINGS
from sluice.db import transaction
from sluice.fakes.airtable import FakeAirtable, FakeBase, FakeTable, add_leads_table

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sqlalchemy.ext.asyncio import AsyncEngine

    from schemas.airtable import RecordChange, TableDestroyed

Conn = psycopg.Connection[tuple[Any, ...]]
SPEC = {"options": {"filters": {"dataTypes": ["tableData"]}}}


class Airtable:
    """The fake API, running, with one base holding a leads table and one webhook."""

    def __init__(self, fake: FakeAirtable, url: str) -> None:
        self.fake = fake
        self.url = url
        self.base: FakeBase = fake.add_base()
        self.table: FakeTable = add_leads_table(fake, self.base.id)
        self.webhook = fake.add_webhook(
            self.base.id, "https://sluice.example/webhooks/airtable", SPEC
        )

        # One limiter, as in one process: separate ones would each allow 5 requests/s.
        self.limiter = BaseRateLimiter(5, 0.3)

    def client(self, *, pause: float | None = None) -> AirtableClient:
        limiter = self.limiter if pause is None else BaseRateLimiter(5, pause)
        return AirtableClient(self.fake.token, endpoint_url=self.url, limiter=limiter)

    def resolver(self) -> MappingResolver:
        return MappingResolver(self.client(), AIRTABLE_MAPPINGS)


async def register(engine: AsyncEngine, airtable: Airtable) -> None:
    async with transaction(engine) as conn:
        await register_webhook(conn, airtable.webhook.id, airtable.base.id)


async def fetched_changes(
    engine: AsyncEngine, airtable: Airtable, db: Conn
) -> list[RecordChange | TableDestroyed]:
    """Fetch the webhook's payloads and take the events they became off the outbox, in order."""
    await fetch_webhook(engine, airtable.client(), airtable.webhook.id)
    rows = db.execute("SELECT payload::text FROM outbox ORDER BY id").fetchall()
    db.execute("DELETE FROM outbox")
    return [CloudEvent[RecordEvent].model_validate_json(row[0]).data for row in rows]


async def apply_each(
    engine: AsyncEngine,
    resolver: MappingResolver,
    batches: Sequence[Sequence[RecordChange | TableDestroyed]],
) -> None:
    """Apply each batch in a transaction of its own, as consecutive consumer batches are."""
    for batch in batches:
        async with transaction(engine) as conn:
            await apply_record_changes(conn, resolver, batch)


def lead(db: Conn, record_id: str, *columns: str) -> tuple[Any, ...]:
    row = db.execute(
        f"SELECT {', '.join(columns)} FROM leads WHERE record_id = %s",  # type: ignore[arg-type]  # noqa: S608 - column names from the test
        (record_id,),
    ).fetchone()
    assert row is not None
    return tuple(row)
