"""`sluice dlq list | redrive | discard` on a real database, as an operator runs them."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from typer.testing import CliRunner

from commands.main import app

if TYPE_CHECKING:
    import psycopg


def dead_letter(db: psycopg.Connection[Any], offset: int) -> int:
    row = db.execute(
        """INSERT INTO dead_letters (consumer, topic, partition, "offset", key, value, headers,
               event_id, error_type, error)
           VALUES ('jobs', 'square.bookings', 0, %s, 'bk1', '{}', '{}', 'ev', 'Boom', 'broke')
           RETURNING id""",
        (offset,),
    ).fetchone()
    assert row is not None
    return int(row[0])


def sluice(database_url: str, *args: str) -> tuple[int, list[dict[str, Any]], str]:
    result = CliRunner().invoke(app, list(args), env={"DATABASE_URL": database_url})
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return result.exit_code, lines, result.output


def test_discard_marks_a_dead_letter_once_and_needs_a_reason(
    database_url: str, db: psycopg.Connection[Any]
) -> None:
    first, second = dead_letter(db, 1), dead_letter(db, 2)

    code, _, output = sluice(database_url, "dlq", "discard", "--id", str(first), "--reason", " ")
    assert code == 2
    assert "give a reason" in output
    code, _, output = sluice(database_url, "dlq", "discard", "--reason", "bad data")
    assert code == 2
    assert "exactly one of --id and --all" in output

    code, lines, _ = sluice(database_url, "dlq", "discard", "--id", str(first), "--reason", "junk")
    assert (code, lines) == (0, [{"discarded": [first]}])
    code, _, output = sluice(database_url, "dlq", "discard", "--id", str(first), "--reason", "x")
    assert code == 1
    assert "is not pending" in output

    code, pending, _ = sluice(database_url, "dlq", "list")
    assert (code, [row["id"] for row in pending]) == (0, [second])
    _, every, _ = sluice(database_url, "dlq", "list", "--all")
    marked = {row["id"]: row for row in every}
    assert marked[first]["discard_reason"] == "junk"
    assert marked[first]["discarded_by"].startswith("cli")
    audit = db.execute("SELECT action, target, detail FROM audit_log").fetchall()
    assert audit == [("dlq.discard", f"dead_letter:{first}", {"reason": "junk"})]
