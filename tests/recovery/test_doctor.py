"""`sluice doctor` on a real PostgreSQL and Kafka-protocol broker, with the fake Square and
Airtable: a healthy deployment passes; each thing an operator gets wrong fails on its own line."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from commands.main import app
from devkit.embedded import EmbeddedBroker
from devkit.fakes.square import FakeSquare
from ingest.airtable_fetch import register_webhook
from ingest.partitions import partitions
from outbox.topics import ensure_topics, pipeline_topics
from sluice.db import autocommit, transaction
from tests.support.services import running_server
from tests.support.square import SIGNATURE_KEY

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from sqlalchemy.ext.asyncio import AsyncEngine

    from tests.support.airtable import Airtable

pytestmark = [pytest.mark.broker, pytest.mark.slow]

PARTITIONS = 2
ADMIN_TOKEN = "an-admin-token-long-enough-1"  # noqa: S105 - a test's own
API_TOKEN = "an-api-token-long-enough-22"  # noqa: S105 - a test's own


@pytest.fixture
async def square_url() -> AsyncIterator[str]:
    async with running_server(FakeSquare().app) as url:
        yield url


@pytest.fixture
async def kafka_bootstrap() -> AsyncIterator[str]:
    """A broker of these tests' own: on the shared one, other tests make the pipeline's topics
    with other partition counts, which the doctor rightly warns about."""
    broker = EmbeddedBroker()
    bootstrap = await asyncio.to_thread(broker.start)
    try:
        yield bootstrap
    finally:
        await asyncio.to_thread(broker.stop)


@pytest.fixture
async def healthy(
    database_url: str,
    engine: AsyncEngine,
    kafka_bootstrap: str,
    airtable: Airtable,
    square_url: str,
) -> dict[str, str]:
    """The environment of a deployment with nothing wrong."""
    await ensure_topics(kafka_bootstrap, pipeline_topics(), partitions=PARTITIONS)
    hook = airtable.webhook
    async with transaction(engine) as conn:
        await register_webhook(conn, hook.id, airtable.base.id, expires_at=hook.expiration_time)
    return {
        "DATABASE_URL": database_url,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "SLUICE_TOPIC_PARTITIONS": str(PARTITIONS),
        "SQUARE_ENVIRONMENT": "production",
        "SQUARE_WEBHOOK_SIGNATURE_KEYS": SIGNATURE_KEY,
        "SQUARE_WEBHOOK_URL": "https://hooks.sluice.test/webhooks/square",
        "SQUARE_API_URL": square_url,
        "SQUARE_ACCESS_TOKEN": FakeSquare.token,
        "AIRTABLE_API_URL": airtable.url,
        "AIRTABLE_API_KEY": airtable.fake.token,
        "AIRTABLE_WEBHOOK_SECRETS": f"{hook.id}={hook.mac_secret_base64}",
        "SLUICE_ADMIN_TOKEN": ADMIN_TOKEN,
        "SLUICE_API_TOKEN": API_TOKEN,
    }


async def doctor(env: dict[str, str | None]) -> tuple[int, list[list[str]]]:
    """Run `sluice doctor` (in a thread: it runs its own event loop while the fakes answer in
    this one); the exit code and each line as (verdict, what, the rest)."""
    result = await asyncio.to_thread(
        CliRunner().invoke, app, ["doctor", "--timeout", "15"], env=env
    )
    rows = [line.split(None, 1) for line in result.stdout.splitlines() if line.strip()]
    return result.exit_code, rows


def verdicts(rows: list[list[str]], what: str) -> list[str]:
    return [row[0] + " " + row[1] for row in rows if row[1].startswith(what)]


async def test_a_healthy_deployment_passes_every_check(healthy: dict[str, str]) -> None:
    code, rows = await doctor(dict(healthy))
    assert code == 0, rows
    assert {row[0] for row in rows} == {"ok"}, rows
    checked = " ".join(row[1] for row in rows)
    for what in (
        "database",
        "migrations",
        "event store",
        "table sizes",
        "kafka",
        "Square token",
        "Airtable webhook ach",
    ):
        assert what in checked
    assert len([r for r in rows if r[1].startswith("topic ")]) == len(pipeline_topics())
    assert any("merchant ML" in row[1] for row in rows)


async def test_a_database_behind_the_code_fails_on_migrations(
    healthy: dict[str, str], engine: AsyncEngine
) -> None:
    async with transaction(engine) as conn:
        await conn.execute(text("UPDATE alembic_version SET version_num = '0009'"))
    code, rows = await doctor(dict(healthy))
    assert code == 1
    [line] = verdicts(rows, "migrations")
    assert line.startswith("fail migrations")
    assert "at 0009" in line
    assert "run `sluice migrate`" in line


async def test_a_stalled_store_upkeep_warns_and_names_the_fix(
    healthy: dict[str, str], engine: AsyncEngine
) -> None:
    async with autocommit(engine) as conn:
        weeks_ahead = [p.name for p in await partitions(conn) if p.lower and not p.default]
        for name in weeks_ahead:
            await conn.execute(text(f"DROP TABLE {name}"))
        await conn.execute(
            text(
                "INSERT INTO inbound_events (id, source, provider_event_id, event_type,"
                " occurred_at, received_at, body, headers) VALUES (gen_random_uuid(), 'square',"
                " 'ev-far', 'booking.created', now(), now() + interval '300 days', '', '{}')"
            )
        )
    code, rows = await doctor(dict(healthy))
    assert code == 0, rows
    [ahead] = verdicts(rows, "event store weeks ahead")
    assert ahead.startswith("warn")
    assert "sluice store upkeep" in ahead
    [caught] = verdicts(rows, "event store default partition")
    assert "1 events no week covers" in caught
    [store] = verdicts(rows, "event store ")[:1]
    assert "1 partitions" in store
    assert "kept 90 days" in store


async def test_a_missing_topic_fails_on_its_own_line(healthy: dict[str, str]) -> None:
    broker = EmbeddedBroker()
    bootstrap = await asyncio.to_thread(broker.start)
    try:
        *present, missing = pipeline_topics()
        await ensure_topics(bootstrap, present, partitions=PARTITIONS)
        code, rows = await doctor({**healthy, "KAFKA_BOOTSTRAP_SERVERS": bootstrap})
    finally:
        await asyncio.to_thread(broker.stop)
    assert code == 1
    failing = [row for row in rows if row[0] == "fail"]
    assert failing == [
        ["fail", f"topic {missing}" + failing[0][1].removeprefix(f"topic {missing}")]
    ]
    assert "missing" in failing[0][1]
    assert "sluice topics ensure" in failing[0][1]


@pytest.mark.parametrize("setting", ["SLUICE_ADMIN_TOKEN", "AIRTABLE_API_KEY"])
async def test_a_placeholder_secret_fails_naming_the_setting(
    healthy: dict[str, str], setting: str
) -> None:
    code, rows = await doctor({**healthy, setting: "changeme"})
    assert code == 1
    [line] = verdicts(rows, setting)
    assert line.startswith(f"fail {setting}")
    assert "placeholder" in line
    # The key also fails where it is used; nothing else does.
    others = {row[1].split()[0] for row in rows if row[0] == "fail"} - {setting}
    assert others <= {"Airtable"}, rows


async def test_a_token_of_the_other_environment_fails_on_the_square_token(
    healthy: dict[str, str],
) -> None:
    code, rows = await doctor({**healthy, "SQUARE_ACCESS_TOKEN": "EAAAsandbox-token-of-another"})
    assert code == 1
    failing = [row for row in rows if row[0] == "fail"]
    assert len(failing) == 1, rows
    assert failing[0][1].startswith("Square token (production)")
    assert "refused the token (401)" in failing[0][1]
    assert "production environment" in failing[0][1]


async def test_an_unreachable_database_fails_the_checks_that_need_it_and_the_rest_still_run(
    healthy: dict[str, str],
) -> None:
    code, rows = await doctor(
        {**healthy, "DATABASE_URL": "postgresql://sluice:pw@127.0.0.1:1/nowhere"}
    )
    assert code == 1
    assert verdicts(rows, "database")[0].startswith("fail database")
    assert verdicts(rows, "Square token")[0].startswith("ok")
    assert all(len(row) == 2 for row in rows)  # one line each, no traceback


async def test_a_registered_webhook_without_its_mac_secret_fails(
    healthy: dict[str, str], airtable: Airtable
) -> None:
    code, rows = await doctor({**healthy, "AIRTABLE_WEBHOOK_SECRETS": None})
    assert code == 1
    [line] = verdicts(rows, f"Airtable webhook {airtable.webhook.id}")
    assert line.startswith("fail")
    assert "AIRTABLE_WEBHOOK_SECRETS" in line
