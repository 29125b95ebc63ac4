"""The doctor's checks of what sluice runs on: PostgreSQL, its migration level, Kafka's topics."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from sqlalchemy import text

from outbox.topics import partition_counts, pipeline_topics
from recovery.doctor.findings import Finding, fail, ok, warn
from sluice.db import create_engine
from sluice.migrate import head_revisions

if TYPE_CHECKING:
    from sluice.settings import Settings

_DEV_FIX = "set {} (or run beside `sluice dev`)"


def _where(database_url: str) -> str:
    parts = urlsplit(database_url)
    return f"{parts.hostname}:{parts.port or 5432}{parts.path}"


async def database(settings: Settings) -> list[Finding]:
    if settings.database_url is None:
        return [fail("database", "DATABASE_URL is not set", _DEV_FIX.format("DATABASE_URL"))]
    engine = create_engine(settings.database_url, pool_size=1, application_name="sluice-doctor")
    try:
        async with engine.connect() as conn:
            version = (await conn.execute(text("SHOW server_version"))).scalar_one()
            current = set(
                (
                    await conn.execute(
                        text(
                            "SELECT version_num FROM alembic_version "
                            "WHERE to_regclass('alembic_version') IS NOT NULL"
                        )
                    )
                ).scalars()
            )
    except Exception as exc:  # noqa: BLE001 - unreachable or refused: the finding says which
        return [
            fail(
                "database",
                f"cannot connect to {_where(settings.database_url)}: {type(exc).__name__}",
                "check DATABASE_URL, the server and the network between",
            )
        ]
    finally:
        await engine.dispose()
    where = _where(settings.database_url)
    return [ok("database", f"PostgreSQL {version} at {where}"), _migrations(current)]


def _migrations(current: set[str]) -> Finding:
    heads = head_revisions()
    shown = ", ".join(sorted(heads))
    if current == heads:
        return ok("migrations", f"at head {shown}")
    fix = "run `sluice migrate`"
    if not current:
        return fail("migrations", f"none applied; head is {shown}", fix)
    return fail("migrations", f"at {', '.join(sorted(current))}; head is {shown}", fix)


async def kafka(settings: Settings) -> list[Finding]:
    if settings.kafka_bootstrap_servers is None:
        return [
            fail(
                "kafka",
                "KAFKA_BOOTSTRAP_SERVERS is not set",
                _DEV_FIX.format("KAFKA_BOOTSTRAP_SERVERS"),
            )
        ]
    names = pipeline_topics()
    counts = await partition_counts(settings.kafka_bootstrap_servers, names)
    findings = [ok("kafka", f"{settings.kafka_bootstrap_servers} answers")]
    wanted = settings.topic_partitions
    for name in names:
        what = f"topic {name}"
        count = counts.get(name)
        if count is None:
            findings.append(fail(what, "missing", "run `sluice topics ensure`"))
        elif count != wanted:
            findings.append(
                warn(
                    what,
                    f"{count} partitions, SLUICE_TOPIC_PARTITIONS is {wanted}",
                    "keys map to other partitions than planned; keep it or recreate the topic",
                )
            )
        else:
            findings.append(ok(what, f"{count} partitions"))
    return findings
