"""Helpers for the fuzz tests: an app served from a thread (hypothesis drives plain functions,
not coroutines), a database that lives for one test module, and row counts."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import TYPE_CHECKING, Any

import psycopg
import uvicorn

from devkit.embedded import free_port
from tests.support.services import libpq_url

if TYPE_CHECKING:
    from collections.abc import Iterator

    from starlette.types import ASGIApp

    from tests.support.services import PostgresCluster

Conn = psycopg.Connection[tuple[Any, ...]]

# Every table a request could write to; a refused request must change none of them.
WRITTEN_TABLES = ("inbound_events", "outbox", "jobs", "leads", "projection_changes")


@contextlib.contextmanager
def served_in_thread(app: ASGIApp) -> Iterator[str]:
    """Serve `app` with uvicorn on a free loopback port, in a thread with its own event loop."""
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the server did not start")
        thread.join(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


@contextlib.contextmanager
def module_database(cluster: PostgresCluster, template: str) -> Iterator[str]:
    name = cluster.create_database(template)
    try:
        yield cluster.url_for(name)
    finally:
        cluster.drop_database(name)


def connect(database_url: str) -> Conn:
    return psycopg.connect(libpq_url(database_url), autocommit=True)


def row_counts(db: Conn) -> dict[str, int]:
    counts: dict[str, int] = {}
    for table in WRITTEN_TABLES:
        query = f"SELECT count(*) FROM {table}"  # noqa: S608 - our own table names
        row = db.execute(query).fetchone()
        assert row is not None
        counts[table] = row[0]
    return counts
