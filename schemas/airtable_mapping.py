"""Which Airtable table feeds which projection, and which field feeds which column.

A `TableMapping` names the Airtable table and each field by name (as people see them) or by id.
Webhook payloads key cells by field id, so names are resolved to ids once, through the base
schema API, into a `ResolvedTable`. Who owns each column is not repeated here: it is the
projection's `Ownership` (schemas/ownership.py). A field mapped to an app-owned column is the
field the app writes back to; its values from Airtable are never read into the column.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import structlog

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from pyairtable.models.schema import BaseSchema

    from schemas.ownership import Ownership

log = structlog.get_logger(__name__)


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
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return None


def as_bool(value: Any) -> bool:  # noqa: ANN401 - any Airtable cell
    # Airtable leaves an unticked checkbox out (or null): that is False, not unknown.
    return bool(value)


def as_timestamp(value: Any) -> datetime | None:  # noqa: ANN401 - any Airtable cell
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


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

    def columns(self, cells: Mapping[str, Any]) -> dict[str, Any]:
        """The source-owned column values carried by `cells` (cell values by field id)."""
        return {
            mapped.column: mapped.convert(value)
            for field_id, value in cells.items()
            if (mapped := self.by_field_id.get(field_id)) is not None
        }

    def app_columns(self, cells: Mapping[str, Any]) -> dict[str, Any]:
        """The app-owned column values carried by `cells`: what Airtable now holds there."""
        return {
            mapped.column: mapped.convert(value)
            for field_id, value in cells.items()
            if (mapped := self.app_by_field_id.get(field_id)) is not None
        }


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
