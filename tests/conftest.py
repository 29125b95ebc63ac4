from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
import pytest
import stamina

from devkit.embedded import EmbeddedBroker, EmbeddedPostgres
from devkit.fakes.airtable import FakeAirtable
from ingest.app import create_app
from sluice.db import create_engine
from sluice.logging import configure_logging
from sluice.settings import Settings
from tests.support.airtable import Airtable
from tests.support.apache_kafka import apache_kafka, use_apache_kafka
from tests.support.services import PostgresCluster, cluster_from_env, libpq_url, running_server
from tests.support.square import ROTATED_KEY, SIGNATURE_KEY, WEBHOOK_URL

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from sqlalchemy.ext.asyncio import AsyncEngine


@pytest.fixture(scope="session", autouse=True)
def _logging() -> None:
    configure_logging("json", "warning")


@pytest.fixture(scope="session", autouse=True)
def _no_retry_waits() -> Iterator[None]:
    """stamina's test mode: no waits between retries, and every call keeps its own number of
    tries (capped, not replaced), so tests still see each retry at the fake servers."""
    with stamina.set_testing(True, attempts=100, cap=True):
        yield


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    url = os.environ.get("DATABASE_URL")
    if url:
        yield cluster_from_env(url)
        return
    # Not under pytest's basetemp: pytest prunes old basetemp folders, and another pytest run on
    # the same machine could delete the data of a server that is still running.
    data_dir = Path(tempfile.mkdtemp(prefix="sluice-test-pg-"))
    server = EmbeddedPostgres(data_dir)
    server.start()
    try:
        yield PostgresCluster(server.url)
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def template_database(postgres_cluster: PostgresCluster) -> Iterator[str]:
    name = postgres_cluster.create_template()
    yield name
    postgres_cluster.drop_database(name)


@pytest.fixture
def database_url(postgres_cluster: PostgresCluster, template_database: str) -> Iterator[str]:
    """A fresh, migrated database for one test."""
    name = postgres_cluster.create_database(template_database)
    yield postgres_cluster.url_for(name)
    postgres_cluster.drop_database(name)


@pytest.fixture
def db(database_url: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """A plain autocommit connection for asserting on rows."""
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        yield conn


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url, pool_size=4, application_name="sluice-test")
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
async def airtable() -> AsyncIterator[Airtable]:
    """The fake Airtable API, running, with a leads table and a webhook in one base."""
    fake = FakeAirtable()  # a test that checks the 5/s limit has the fake enforce it too
    async with running_server(fake.app) as url:
        yield Airtable(fake, url)


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    servers = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if servers:
        yield servers
        return
    if use_apache_kafka():  # SLUICE_TEST_KAFKA, or a Docker engine that answers
        with apache_kafka() as bootstrap:
            yield bootstrap
        return
    broker = EmbeddedBroker()
    broker.start()
    try:
        yield broker.bootstrap_servers
    finally:
        broker.stop()


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(
        DATABASE_URL=database_url,
        SQUARE_ENVIRONMENT="production",  # the environment signed_square_delivery sends from
        SQUARE_WEBHOOK_SIGNATURE_KEYS=f"{SIGNATURE_KEY},{ROTATED_KEY}",
        SQUARE_WEBHOOK_URL=WEBHOOK_URL,
        SLUICE_MAX_BODY_BYTES=64 * 1024,
    )


@pytest.fixture
async def ingest_url(settings: Settings) -> AsyncIterator[str]:
    async with running_server(create_app(settings)) as url:
        yield url


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say it loudly when the console's browser tests did not run: a green run without them
    proves nothing about the pages."""
    skipped = [
        report
        for report in terminalreporter.stats.get("skipped", [])
        if "test_console_browser" in report.nodeid
    ]
    if skipped:
        terminalreporter.write_sep(
            "!",
            f"{len(skipped)} BROWSER TESTS SKIPPED: no Chromium found "
            "(apt-get install chromium); the console's pages were not tested in a browser",
            red=True,
            bold=True,
        )
