"""Errors say whether to retry: each of ours is transient or invalid, and the database boundary
turns driver errors into ours."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from pydantic import BaseModel, ValidationError
from sqlalchemy import text
from sqlalchemy.exc import ProgrammingError

from consumers.errors import InvalidMessageError
from consumers.runtime import verdict
from ingest.airtable_fetch import UnknownWebhookError
from ingest.record import RejectedEventError
from outbox.producer import KafkaUnavailableError, PublishRefusedError, TopicMissingError
from providers.airtable import (
    AirtableRateLimitedError,
    AirtableRequestError,
    AirtableUnavailableError,
)
from providers.square import (
    SquareRequestError,
    SquareUnavailableError,
    SquareUnreachableError,
    answer_error,
)
from schemas.ownership import OwnershipError
from sluice.db import (
    DatabaseRefusedError,
    DatabaseUnavailableError,
    create_engine,
    savepoint,
    transaction,
)
from sluice.errors import InvalidInputError, TransientError
from sluice.resilience import CircuitOpenError

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

TRANSIENT: list[Exception] = [
    DatabaseUnavailableError("gone"),
    KafkaUnavailableError("gone"),
    TopicMissingError("app.changes"),
    AirtableUnavailableError("503"),
    AirtableRateLimitedError("app1", 30),
    SquareUnavailableError("500", 500),
    SquareUnreachableError("refused"),
    CircuitOpenError("open"),
]
INVALID: list[Exception] = [
    DatabaseRefusedError("NUL"),
    PublishRefusedError("too large"),
    AirtableRequestError(422, "INVALID_VALUE"),
    SquareRequestError(400, "bad window"),
    InvalidMessageError("not JSON"),
    UnknownWebhookError("achX"),
    RejectedEventError("NUL"),
]


@pytest.mark.parametrize("error", TRANSIENT, ids=lambda e: type(e).__name__)
def test_outages_are_transient(error: Exception) -> None:
    assert isinstance(error, TransientError)
    assert not isinstance(error, InvalidInputError)
    assert verdict(error) == "retry"


@pytest.mark.parametrize("error", INVALID, ids=lambda e: type(e).__name__)
def test_inputs_that_never_succeed_are_invalid(error: Exception) -> None:
    assert isinstance(error, InvalidInputError)
    assert not isinstance(error, TransientError)
    assert verdict(error) == "invalid"


class _Shape(BaseModel):
    n: int


def _validation_error() -> ValidationError:
    try:
        _Shape.model_validate({"n": "many"})
    except ValidationError as exc:
        return exc
    raise AssertionError("validated")


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (_validation_error(), "invalid"),
        (AttributeError("'NoneType' object has no attribute 'id'"), "bug"),
        (TypeError("unsupported operand"), "bug"),
        (KeyError("booking"), "bug"),
        (OwnershipError("jobs: writing notes"), "bug"),
        (ValueError("every row of one upsert must carry the same columns"), "bug"),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, Exception) else str(v),
)
def test_anything_else_is_a_bug(error: Exception, expected: str) -> None:
    assert verdict(error) == expected


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (408, SquareUnavailableError),
        (429, SquareUnavailableError),
        (500, SquareUnavailableError),
        (503, SquareUnavailableError),
        (400, SquareRequestError),
        (404, SquareRequestError),
    ],
)
def test_what_square_answered_becomes_ours(status: int, kind: type[Exception]) -> None:
    error = answer_error(status, {"errors": [{"code": "X"}]})
    assert type(error) is kind
    assert f"Square answered {status}" in str(error)


async def test_the_database_boundary_says_refused_or_unavailable(engine: AsyncEngine) -> None:
    with pytest.raises(DatabaseRefusedError, match="DivisionByZero") as refused:
        async with transaction(engine) as conn:
            await conn.execute(text("SELECT 1 / 0"))
    assert isinstance(refused.value, InvalidInputError)
    async with transaction(engine) as conn:
        await conn.execute(text("CREATE TEMP TABLE t (id int PRIMARY KEY)"))
        await conn.execute(text("INSERT INTO t VALUES (1)"))
        with pytest.raises(DatabaseRefusedError, match="UniqueViolation"):
            async with savepoint(conn):
                await conn.execute(text("INSERT INTO t VALUES (1)"))
        # Only the savepoint was rolled back; the transaction goes on.
        assert (await conn.execute(text("SELECT count(*) FROM t"))).scalar() == 1
        # A statement that cannot be right is a bug: it stays the driver's error.
        with pytest.raises(ProgrammingError):
            async with savepoint(conn):
                await conn.execute(text("SELECT no_such_column FROM t"))


async def test_an_unreachable_database_is_unavailable() -> None:
    engine = create_engine("postgresql+psycopg://sluice@127.0.0.1:1/none", pool_size=1)
    try:
        with pytest.raises(DatabaseUnavailableError) as caught:
            async with transaction(engine) as conn:
                await conn.execute(text("SELECT 1"))
        assert isinstance(caught.value, TransientError)
    finally:
        await engine.dispose()
