"""The plain handler bench/ingest_bench.py measures sluice beside: what one would write instead.

A Starlette endpoint that verifies Square's signature, then stores the raw event and an outbox
row in one SQLAlchemy transaction, and answers 200. No batching, no tricks: the baseline.

    DATABASE_URL=postgresql+psycopg://... SQUARE_WEBHOOK_SIGNATURE_KEY=... \
    SQUARE_WEBHOOK_URL=http://host:port/webhooks/square \
    python -m uvicorn plain_ingest:app --app-dir bench --workers 2

The tables must exist (`metadata.create_all`); the benchmark creates them in its database.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Identity,
    LargeBinary,
    MetaData,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, TIMESTAMP, UUID, insert
from sqlalchemy.ext.asyncio import create_async_engine
from starlette.applications import Starlette
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from starlette.requests import Request

metadata = MetaData()
plain_events = Table(
    "plain_events",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")),
    Column("provider_event_id", Text, nullable=False, unique=True),
    Column("body", LargeBinary, nullable=False),
    Column("headers", JSONB, nullable=False),
    Column("received_at", TIMESTAMP(timezone=True), nullable=False, server_default=func.now()),
)
plain_outbox = Table(
    "plain_outbox",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("topic", Text, nullable=False),
    Column("key", Text, nullable=False),
    Column("payload", JSON, nullable=False),
)


def square_signature(key: str, url: str, body: bytes) -> str:
    digest = hmac.new(key.encode(), url.encode() + body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


async def square_webhook(request: Request) -> Response:
    body = await request.body()
    expected = square_signature(request.app.state.key, request.app.state.url, body)
    given = request.headers.get("x-square-hmacsha256-signature", "")
    if not hmac.compare_digest(expected.encode(), given.encode()):
        return JSONResponse({"error": "bad signature"}, status_code=401)
    try:
        event = json.loads(body)
        event_id = event["event_id"]
        entity = event["data"]
        topic, key = f"square.{entity['type']}", entity["id"]
    except (ValueError, KeyError, TypeError):
        return JSONResponse({"error": "not a Square event"}, status_code=400)

    async with request.app.state.engine.begin() as conn:
        stored = await conn.execute(
            insert(plain_events)
            .values(provider_event_id=event_id, body=body, headers=dict(request.headers))
            .on_conflict_do_nothing(index_elements=["provider_event_id"])
            .returning(plain_events.c.id)
        )
        duplicate = stored.first() is None
        if not duplicate:
            await conn.execute(insert(plain_outbox).values(topic=topic, key=key, payload=event))
    return JSONResponse({"duplicate": duplicate})


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    app.state.key = os.environ["SQUARE_WEBHOOK_SIGNATURE_KEY"]
    app.state.url = os.environ["SQUARE_WEBHOOK_URL"]
    # A pool of its own per worker, every connection kept open: with overflow, the connections
    # past the pool are closed and opened again as the load wavers.
    app.state.engine = create_async_engine(os.environ["DATABASE_URL"], pool_size=20, max_overflow=0)
    try:
        yield
    finally:
        await app.state.engine.dispose()


app = Starlette(
    routes=[Route("/webhooks/square", square_webhook, methods=["POST"])], lifespan=lifespan
)
