"""The Airtable world the tests share (one fixture, `airtable` in conftest): the fake API running,
with one base holding a leads table and one webhook, and the steps that move its changes into
the projections."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import psycopg

from consumers.airtable_projection import MappingResolver, apply_record_changes
from devkit.fakes.airtable import FakeAirtable, FakeBase, FakeTable, add_leads_table
from ingest.airtable_fetch import fetch_webhook, register_webhook
from providers.airtable import AirtableClient, BaseRateLimiter
from schemas.airtable import RecordEvent
from schemas.envelope import CloudEvent
from schemas.leads import AIRTABLE_MAPPINGS
from sluice.db import create_engine, transaction

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from sqlalchemy.ext.asyncio import AsyncEngine

    from devkit.fakes.airtable import FakeWebhook, RecordedRequest
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

    def leads(self, *rows: dict[str, Any]) -> list[str]:
        """One base transaction creating a lead per row (cells by field name)."""
        return self.fake.create_records(self.base.id, "Leads", list(rows))

    def cell(self, record_id: str, field: str) -> Any:
        return self.table.records[record_id].cells.get(self.table.field(field).id)

    def key(self, record_id: str) -> str:
        """The record's event key, `base/table/record`."""
        return f"{self.base.id}/{self.table.id}/{record_id}"

    def table_requests(self) -> list[RecordedRequest]:
        """Requests to the leads table's records API, in arrival order."""
        path = f"/v0/{self.base.id}/{self.table.id}"
        return [r for r in self.fake.requests if r.path.startswith(path)]

    async def registered_webhook(self, database_url: str) -> FakeWebhook:
        """A webhook made now and registered in sluice: changes before it have no payloads."""
        hook = self.fake.add_webhook(self.base.id, None, SPEC)
        engine = create_engine(database_url, pool_size=1)
        try:
            async with transaction(engine) as conn:
                await register_webhook(conn, hook.id, self.base.id)
        finally:
            await engine.dispose()
        return hook

    @contextlib.contextmanager
    def payloads_lost(self) -> Iterator[None]:
        """Changes made inside reach no webhook, as if their payloads had expired."""
        hooks, self.base.webhooks = self.base.webhooks, {}
        try:
            yield
        finally:
            self.base.webhooks = hooks


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
        f"SELECT {', '.join(columns)} FROM leads WHERE record_id = %s",  # noqa: S608 - column names from the test
        (record_id,),
    ).fetchone()
    assert row is not None
    return tuple(row)
