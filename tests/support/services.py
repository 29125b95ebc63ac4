"""Real services for the tests: PostgreSQL and a Kafka-protocol broker.

`DATABASE_URL` / `KAFKA_BOOTSTRAP_SERVERS` point the suite at existing servers; without them the
embedded ones from the project's own dependencies are started once per test session.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

import psycopg
import uvicorn

from devkit.embedded import free_port
from sluice.db import libpq_url
from sluice.http_server import HttpLimits, uvicorn_options
from sluice.migrate import upgrade
from sluice.settings import Settings, normalise_database_url

__all__ = ["PostgresCluster", "cluster_from_env", "libpq_url", "running_server"]

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from starlette.types import ASGIApp


@dataclass
class PostgresCluster:
    """A server the tests may create and drop databases on."""

    admin_url: str  # SQLAlchemy URL of a maintenance database

    def url_for(self, database: str) -> str:
        base, _, _ = self.admin_url.rpartition("/")
        return f"{base}/{database}"

    def execute(self, sql: str) -> None:
        with psycopg.connect(libpq_url(self.admin_url), autocommit=True) as conn:
            conn.execute(sql)

    def create_template(self) -> str:
        name = f"sluice_tpl_{uuid.uuid4().hex[:10]}"
        self.execute(f'CREATE DATABASE "{name}"')
        upgrade(self.url_for(name))
        return name

    def create_database(self, template: str) -> str:
        name = f"sluice_test_{uuid.uuid4().hex[:12]}"
        self.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        return name

    def drop_database(self, name: str) -> None:
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def cluster_from_env(url: str) -> PostgresCluster:
    return PostgresCluster(normalise_database_url(url))


@contextlib.asynccontextmanager
async def running_server(
    app: ASGIApp, limits: HttpLimits | None = None, *, port: int | None = None
) -> AsyncIterator[str]:
    """Serve `app` on a loopback port (`port`, or a free one), in this event loop, as sluice's
    servers run (with `limits`, or the default ones).
    """
    port = port or free_port()
    options = uvicorn_options(limits or HttpLimits.from_settings(Settings()))
    config = uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="on", **options)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
