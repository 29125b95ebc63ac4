"""The database engine and the boundary where driver errors become our own.

Inside `transaction()`, `autocommit()` and `savepoint()`, a connection-level failure becomes
`DatabaseUnavailableError` (transient: retry) and a value the database refuses (a data or
integrity error: a NUL in text, a number out of range, a constraint) becomes
`DatabaseRefusedError` (invalid: the same statement with the same values fails again). Anything
else, a syntax error or a missing column, is a bug and passes through as the driver raised it.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import psycopg
from sqlalchemy import text
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from sluice.errors import InvalidInputError, TransientError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from sqlalchemy import Row


class DatabaseUnavailableError(TransientError):
    """PostgreSQL could not be reached or dropped the connection: retry later."""


class DatabaseRefusedError(InvalidInputError):
    """PostgreSQL refused the values (a data or integrity error): they will never fit."""


def create_engine(url: str, *, pool_size: int = 8, application_name: str = "sluice") -> AsyncEngine:
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        # No pre-ping: it costs a round trip per checkout on the hot path. A connection that died
        # with the server fails its statement instead, SQLAlchemy then discards the whole pool,
        # and the caller's retry (or Square's) gets fresh connections.
        pool_pre_ping=False,
        pool_timeout=5,
        connect_args={"connect_timeout": 3, "application_name": application_name},
    )


def row_json(row: Row[Any]) -> dict[str, Any]:
    """A row as JSON values: times as ISO 8601 text."""
    return {k: v.isoformat() if hasattr(v, "isoformat") else v for k, v in row._asdict().items()}


def libpq_url(database_url: str) -> str:
    """The same database as a libpq URL, for connections psycopg opens without SQLAlchemy."""
    return database_url.replace("postgresql+psycopg://", "postgresql://", 1)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).splitlines()
    return lines[0] if lines else type(exc).__name__


def unavailable(exc: BaseException) -> DatabaseUnavailableError:
    """Our error for a transient driver failure, with the first line of its message."""
    return DatabaseUnavailableError(_first_line(exc))


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, OperationalError | InterfaceError | PoolTimeoutError | OSError):
        return True
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        return True  # from statements run on the driver connection (driver_connection)
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


def is_refused(exc: BaseException) -> bool:
    """The database refused the values themselves (SQLAlchemy's wrapper or psycopg's own)."""
    return isinstance(exc, DataError | IntegrityError | psycopg.DataError | psycopg.IntegrityError)


def as_ours(exc: Exception) -> Exception:
    """A driver error as ours (see the module docstring); any other error as it is."""
    if isinstance(exc, TransientError | InvalidInputError):
        return exc
    if is_transient(exc):
        return unavailable(exc)
    if is_refused(exc):
        driver = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
        return DatabaseRefusedError(f"{type(driver).__name__}: {_first_line(driver)}")
    return exc


@asynccontextmanager
async def _driver_errors_as_ours() -> AsyncIterator[None]:
    try:
        yield
    except Exception as exc:
        ours = as_ours(exc)
        if ours is exc:
            raise
        raise ours from exc


@asynccontextmanager
async def transaction(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """One transaction; driver errors surface as ours (see the module docstring)."""
    async with _driver_errors_as_ours(), engine.begin() as conn:
        yield conn


@asynccontextmanager
async def autocommit(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection on which every statement is its own transaction: for work that is one
    statement, it saves the BEGIN and COMMIT round trips. Failures map as in `transaction`."""
    async with _driver_errors_as_ours(), engine.connect() as conn:
        yield await conn.execution_options(isolation_level="AUTOCOMMIT")


@asynccontextmanager
async def savepoint(conn: AsyncConnection) -> AsyncIterator[AsyncConnection]:
    """A savepoint inside `conn`'s transaction: a failure inside rolls back to it alone, and
    surfaces as in `transaction`."""
    async with _driver_errors_as_ours(), conn.begin_nested():
        yield conn


async def driver_connection(conn: AsyncConnection) -> psycopg.AsyncConnection[Any]:
    """The psycopg connection under `conn`, inside the same transaction.

    For the write-path statements run once per batch on every delivery: SQLAlchemy's execution
    layer (compile cache, parameter processing, result wrapping) costs more CPU than psycopg
    running the statement. Everything else goes through SQLAlchemy.
    """
    raw = await conn.get_raw_connection()
    driver = raw.driver_connection
    if not isinstance(driver, psycopg.AsyncConnection):
        raise TypeError(f"expected a psycopg async connection, got {type(driver).__name__}")
    return driver


async def ping(engine: AsyncEngine) -> None:
    async with transaction(engine) as conn:
        await conn.execute(text("SELECT 1"))
