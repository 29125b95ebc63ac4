"""Which Airtable table feeds which projection, and which field feeds which column.

A `TableMapping` names the Airtable table and each field by name (as people see them) or by id.
Webhook payloads key cells by field id, so names are resolved to ids once, through the base
schema API, into a `ResolvedTable`. Who owns each column is not repeated here: it is the
projection's `Ownership` (schemas/ownership.py). A field mapped to an app-owned column is the
field the app writes back to; its values from Airtable are never read into the column.

A cell its column cannot hold (text in a number field's column, a number past the column's
range, a NUL character, which PostgreSQL text cannot store) is refused on its own, with a
reason: the rest of the change still applies, and the column keeps what it had.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

import structlog
from sqlalchemy import BigInteger, Integer, SmallInteger

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from pyairtable.models.schema import BaseSchema
    from sqlalchemy.types import TypeEngine

    from schemas.ownership import Ownership

log = structlog.get_logger(__name__)


# Why a cell was refused, as a closed set (metric labels); the message gives the detail.
RefusalKind = Literal["not_a_number", "not_a_whole_number", "not_a_time", "out_of_range", "nul"]


class CellRefusedError(ValueError):
    """A cell value its column cannot hold; the message says why."""

    def __init__(self, kind: RefusalKind, message: str) -> None:
        super().__init__(message)
        self.kind: RefusalKind = kind


def as_text(value: Any) -> str | None:  # noqa: ANN401 - any Airtable cell
    if value is None or value == "":
        return None
    if isinstance(value, dict):  # a select choice or a collaborator, in payload format
        return str(value.get("name") or value.get("email") or value.get("id") or "") or None
    if isinstance(value, list):
        parts = [as_text(item) for item in value]
        return ", ".join(p for p in parts if p) or None
    return str(value)


def as_int(value: Any) -> int | None:  # noqa: ANN401 - any Airtable cell
    if value is None or value == "":
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    number: float
    if isinstance(value, float):
        number = value
    elif isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            pass
        try:
            number = float(value)
        except ValueError:
            raise CellRefusedError("not_a_number", "not a number") from None
    else:
        raise CellRefusedError("not_a_number", "not a number")
    if not math.isfinite(number):
        raise CellRefusedError("not_a_number", "not a number")
    if not number.is_integer():
        raise CellRefusedError("not_a_whole_number", "not a whole number")
    return int(number)


def as_bool(value: Any) -> bool:  # noqa: ANN401 - any Airtable cell
    # Airtable leaves an unticked checkbox out (or null): that is False, not unknown.
    return bool(value)


def as_timestamp(value: Any) -> datetime | None:  # noqa: ANN401 - any Airtable cell
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise CellRefusedError("not_a_time", "not a date and time")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise CellRefusedError("not_a_time", "not an ISO 8601 date and time") from None
    if parsed.tzinfo is None:
        raise CellRefusedError("not_a_time", "a date and time without a time zone")
    return parsed


# The range of each integer column type, as PostgreSQL stores it.
_INTEGER_RANGES: tuple[tuple[type[TypeEngine[Any]], int], ...] = (
    (SmallInteger, 2**15),
    (BigInteger, 2**63),
    (Integer, 2**31),
)


def check_fits(column_type: TypeEngine[Any], value: Any) -> None:  # noqa: ANN401 - converted
    """Raise CellRefusedError if a column of `column_type` cannot hold `value` (converted)."""
    if isinstance(value, str) and "\x00" in value:
        raise CellRefusedError("nul", "contains the NUL character, which text cannot hold")
    if isinstance(value, int) and not isinstance(value, bool):
        for kind, bound in _INTEGER_RANGES:
            if isinstance(column_type, kind):
                if not -bound <= value < bound:
                    raise CellRefusedError(
                        "out_of_range", f"out of range for its column ({-bound} to {bound - 1})"
                    )
                return


@dataclass(frozen=True, slots=True)
class RefusedCell:
    field_id: str
    column: str
    value: Any
    kind: RefusalKind
    reason: str


@dataclass(frozen=True, slots=True)
class Cells:
    """A change's cells as column values, and the cells refused on the way."""

    columns: dict[str, Any]
    refused: tuple[RefusedCell, ...] = ()


@dataclass(frozen=True, slots=True)
class FieldMapping:
    column: str
    field: str  # Airtable field name, or field id ("fld...")
    convert: Callable[[Any], Any] = as_text


@dataclass(frozen=True, slots=True)
class TableMapping:
    table: str  # Airtable table name, or table id ("tbl...")
    ownership: Ownership
    fields: tuple[FieldMapping, ...]

    def __post_init__(self) -> None:
        for mapped in self.fields:
            if mapped.column not in (*self.ownership.source_columns, *self.ownership.app):
                raise ValueError(f"{self.ownership.name}.{mapped.column} is not a mapped column")

    @property
    def source_fields(self) -> tuple[FieldMapping, ...]:
        """The fields read from Airtable: those feeding source-owned columns."""
        return tuple(f for f in self.fields if f.column in self.ownership.source_columns)

    @property
    def app_fields(self) -> tuple[FieldMapping, ...]:
        """The fields the app writes back to: those of app-owned columns."""
        return tuple(f for f in self.fields if f.column in self.ownership.app)


@dataclass(frozen=True, slots=True)
class ResolvedTable:
    base_id: str
    table_id: str
    mapping: TableMapping
    by_field_id: Mapping[str, FieldMapping]  # source fields only
    missing: tuple[str, ...]  # mapped names the base does not have
    # App-owned fields (the write-back targets): read only to notice people editing them.
    app_by_field_id: Mapping[str, FieldMapping] = field(default_factory=dict)

    def columns(self, cells: Mapping[str, Any]) -> Cells:
        """The source-owned column values carried by `cells` (cell values by field id)."""
        return self._convert(cells, self.by_field_id)

    def app_columns(self, cells: Mapping[str, Any]) -> Cells:
        """The app-owned column values carried by `cells`: what Airtable now holds there."""
        return self._convert(cells, self.app_by_field_id)

    def _convert(self, cells: Mapping[str, Any], fields: Mapping[str, FieldMapping]) -> Cells:
        table = self.mapping.ownership.table
        columns: dict[str, Any] = {}
        refused: list[RefusedCell] = []
        for field_id, value in cells.items():
            mapped = fields.get(field_id)
            if mapped is None:
                continue
            try:
                converted = mapped.convert(value)
                check_fits(table.columns[mapped.column].type, converted)
            except CellRefusedError as exc:
                refused.append(RefusedCell(field_id, mapped.column, value, exc.kind, str(exc)))
            else:
                columns[mapped.column] = converted
        return Cells(columns, tuple(refused))


def resolve(mapping: TableMapping, base_id: str, schema: BaseSchema) -> ResolvedTable | None:
    """Field names to field ids, once per base. None if the base has no such table."""
    table = next((t for t in schema.tables if mapping.table in (t.id, t.name)), None)
    if table is None:
        return None
    by_field_id: dict[str, FieldMapping] = {}
    missing = []
    for mapped in mapping.source_fields:
        found = next((f for f in table.fields if mapped.field in (f.id, f.name)), None)
        if found is None:
            missing.append(mapped.field)
        else:
            by_field_id[found.id] = mapped
    app_by_field_id: dict[str, FieldMapping] = {}
    for mapped in mapping.app_fields:
        found = next((f for f in table.fields if mapped.field in (f.id, f.name)), None)
        if found is not None:
            app_by_field_id[found.id] = mapped
    if missing:
        # A renamed or deleted field stops feeding its column; the rest keeps flowing.
        log.error(
            "airtable.mapping_fields_missing",
            base_id=base_id,
            table=mapping.table,
            projection=mapping.ownership.name,
            missing=missing,
        )
    return ResolvedTable(base_id, table.id, mapping, by_field_id, tuple(missing), app_by_field_id)
