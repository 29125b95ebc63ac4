"""Cells a consumer could not store: recorded beside the change that carried them.

A value its column cannot hold (a number past the column's range, text in a number field's
column, a NUL character) is skipped on its own; the rest of the change applies. Each skip is a
`skipped_cells` row in the change's own transaction, a warning in the log and a count for the
consumer's metrics, so staff see why a field did not follow Airtable (`GET /api/leads/{id}`
lists a lead's) and operators can alert on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import text

from sluice.jsontext import json_text

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sqlalchemy.ext.asyncio import AsyncConnection

    from schemas.airtable_mapping import RefusalKind

log = structlog.get_logger(__name__)

# A value is kept for people to read, not to be applied again: its first characters suffice.
VALUE_CHARS = 1000

_INSERT = text(
    """
    INSERT INTO skipped_cells
        (projection, row_key, provider_event_id, field_id, column_name, value_json, reason)
    SELECT v.projection, v.row_key, v.provider_event_id, v.field_id, v.column_name,
        v.value_json, v.reason
    FROM json_to_recordset(CAST(:rows AS json)) AS v(
        projection text, row_key text, provider_event_id text, field_id text,
        column_name text, value_json text, reason text)
    """
)


@dataclass(frozen=True, slots=True)
class SkippedCell:
    projection: str
    row_key: str
    provider_event_id: str
    field_id: str
    column: str
    value: Any
    kind: RefusalKind
    reason: str


async def record_skipped(conn: AsyncConnection, skipped: Sequence[SkippedCell]) -> None:
    if not skipped:
        return
    for cell in skipped:
        log.warning(
            "consumer.cell_skipped",
            projection=cell.projection,
            row_key=cell.row_key,
            provider_event_id=cell.provider_event_id,
            field_id=cell.field_id,
            column=cell.column,
            kind=cell.kind,
            reason=cell.reason,
        )
    rows = [
        {
            "projection": c.projection,
            "row_key": c.row_key,
            "provider_event_id": c.provider_event_id,
            "field_id": c.field_id,
            "column_name": c.column,
            # json_text escapes a NUL as \u0000: six characters text can hold.
            "value_json": json_text(c.value)[:VALUE_CHARS],
            "reason": c.reason,
        }
        for c in skipped
    ]
    await conn.execute(_INSERT, {"rows": json_text(rows)})
