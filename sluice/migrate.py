"""Running the Alembic migrations that ship inside the package.

Every pod of a deployment runs `sluice migrate` before it starts (an init container), so many may
run at once. Each takes one transaction-scoped advisory lock before Alembic reads the schema's
revision: the first migrates and commits; the rest wait, then find the schema at head and do
nothing. The lock goes with the transaction, so a migrate that dies frees it at once.
"""

from __future__ import annotations

from pathlib import Path

import structlog
from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

MIGRATIONS = Path(__file__).parent / "migrations"

# The two-int advisory lock key (outbox keys use 0x51CE, Airtable fetches 0x51CF, runs 0x51D0).
MIGRATION_LOCK_NAMESPACE = 0x51D1
MIGRATION_LOCK_KEY = 0

_LOCK_PARAMS = {"namespace": MIGRATION_LOCK_NAMESPACE, "key": MIGRATION_LOCK_KEY}
_TRY_LOCK = text("SELECT pg_try_advisory_xact_lock(:namespace, :key)")
_LOCK = text("SELECT pg_advisory_xact_lock(:namespace, :key)")

log = structlog.get_logger(__name__)


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    # ConfigParser interpolation: a literal % in a password must be doubled.
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    engine = create_engine(database_url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            if not conn.execute(_TRY_LOCK, _LOCK_PARAMS).scalar_one():
                log.info("migrate.waiting_for_lock", detail="another migrate is running")
                conn.execute(_LOCK, _LOCK_PARAMS)
            config = alembic_config(database_url)
            # Alembic runs in this transaction (it sees one begun and opens none of its own),
            # so the revision it reads and the DDL it runs are all under the lock.
            config.attributes["connection"] = conn
            command.upgrade(config, revision)
            conn.commit()
    finally:
        engine.dispose()


def head_revisions() -> set[str]:
    """The newest revision(s) the migrations shipped with this code reach."""
    from alembic.script import ScriptDirectory  # noqa: PLC0415

    return set(ScriptDirectory.from_config(alembic_config("postgresql://")).get_heads())
