"""`sluice migrate` is safe to run from every pod at once: the migration lock lets one migrate
while the rest wait, and those find the schema at head and change nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
from alembic.script import ScriptDirectory

from sluice.migrate import MIGRATION_LOCK_KEY, MIGRATION_LOCK_NAMESPACE, alembic_config
from tests.support.services import libpq_url

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.support.services import PostgresCluster

LOCK = {"namespace": MIGRATION_LOCK_NAMESPACE, "key": MIGRATION_LOCK_KEY}
# A two-int advisory lock shows in pg_locks as classid, objid with objsubid 2.
WAITERS = """
    SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database
    WHERE l.locktype = 'advisory' AND NOT l.granted AND d.datname = %(database)s
      AND l.classid = %(namespace)s AND l.objid = %(key)s AND l.objsubid = 2
"""


@pytest.fixture
def empty_database(postgres_cluster: PostgresCluster) -> Iterator[tuple[str, str]]:
    name = f"sluice_empty_{uuid.uuid4().hex[:12]}"
    postgres_cluster.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name, postgres_cluster.url_for(name)
    finally:
        postgres_cluster.drop_database(name)


def start_migrate(database_url: str) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "SLUICE_LOG_FORMAT": "json",
        "SLUICE_LOG_LEVEL": "info",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "sluice", "migrate"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def events(stderr: str) -> list[str]:
    lines: list[dict[str, Any]] = [json.loads(line) for line in stderr.splitlines() if line]
    return [str(line["event"]) for line in lines]


def wait_for_waiters(holder: psycopg.Connection[Any], database: str, count: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        row = holder.execute(WAITERS, {"database": database, **LOCK}).fetchone()
        if row is not None and row[0] == count:
            return
        time.sleep(0.1)
    pytest.fail(f"{count} migrates never waited for the migration lock")


@pytest.mark.slow
def test_two_migrates_at_once_both_succeed_and_the_schema_is_migrated_once(
    empty_database: tuple[str, str],
) -> None:
    name, url = empty_database
    revisions = list(ScriptDirectory.from_config(alembic_config(url)).walk_revisions())
    assert len(revisions) > 1
    # Hold the lock, so that both are started and waiting before either may migrate.
    with psycopg.connect(libpq_url(url)) as holder:
        holder.execute("SELECT pg_advisory_xact_lock(%(namespace)s, %(key)s)", LOCK)
        first, second = start_migrate(url), start_migrate(url)
        try:
            wait_for_waiters(holder, name, 2)
            holder.commit()  # lets them go, together
            outputs = [process.communicate(timeout=120) for process in (first, second)]
        finally:
            for process in (first, second):
                if process.poll() is None:
                    process.kill()
                    process.communicate()
    assert [process.returncode for process in (first, second)] == [0, 0], outputs
    assert [stdout for stdout, _ in outputs] == ["migrations applied\n"] * 2
    upgrades = [
        [event for event in events(stderr) if event.startswith("Running upgrade")]
        for _, stderr in outputs
    ]
    # One ran every migration once; the other found the schema at head and ran none.
    assert sorted(len(ran) for ran in upgrades) == [0, len(revisions)], upgrades
    for _, stderr in outputs:
        assert "migrate.waiting_for_lock" in events(stderr)
    with psycopg.connect(libpq_url(url)) as conn:
        versions = conn.execute("SELECT version_num FROM alembic_version").fetchall()
        assert versions == [(revisions[0].revision,)]  # walk_revisions starts at head
        assert conn.execute("SELECT count(*) FROM outbox").fetchone() == (0,)


@pytest.mark.slow
def test_a_migrate_at_head_changes_nothing(database_url: str) -> None:
    process = start_migrate(database_url)
    stdout, stderr = process.communicate(timeout=120)
    assert (process.returncode, stdout) == (0, "migrations applied\n"), stderr
    assert not [event for event in events(stderr) if event.startswith("Running upgrade")]
    assert "migrate.waiting_for_lock" not in events(stderr)
