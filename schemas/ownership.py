"""Column ownership, declared once per projection.

A projection table has three kinds of columns: the key, columns its source owns (written by a
consumer, each from a named source field), and columns the app owns (staff work, never written by
a consumer). Every statement a consumer runs against a projection table is generated from this
declaration (consumers/upsert.py), so a consumer cannot write an app-owned column: asking for one
is an error.

Ordering is per row: the version column holds the source's version of the row (Square's
`version`, Airtable's base transaction number), and an upsert changes the row's source columns
only when it carries a higher version. A `sticky` column (a deletion time, a merge target) is the
exception: once set it is kept, whatever the version of later changes, because the fact it
records cannot be undone by an older event arriving late.

Some sources give one version to several changes: Airtable may split one action over several
payloads that share its base transaction number. A projection that declares `merge_ties` takes a
change whose version equals the row's too, writing the cells it carries over the row's (parts
of one action carry different cells); an older change still loses. Square's versions are the
object's own, so there a tie is a repeat and changes nothing.

A *snapshot* is the exception to the exception: the source's state as a reconciler read it, not
a change. It carries the version the row had when the reconciler looked and applies only while
the row is still at that version (a tie wins, anything newer makes it lose), sticky columns
included: what it says was inferred at that moment, and a newer change knows better.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

    from sqlalchemy import Table

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")


class OwnershipError(Exception):
    """A statement asked to write a column its projection's source does not own."""


@dataclass(frozen=True, slots=True)
class Redirect:
    """A reference to a row that may since have been merged into another: a `table` row names
    its successor in `to`. The upsert follows the chain (at most `hops` links), so the column
    holds the surviving row's `key`."""

    table: str
    key: str
    to: str
    hops: int = 8


@dataclass(frozen=True, slots=True)
class SourceColumn:
    name: str
    source_field: str  # where the value comes from, for readers and the README
    sticky: bool = False  # once set, kept regardless of version
    follows: Redirect | None = None  # a reference, stored as its surviving row


@dataclass(frozen=True, slots=True)
class CachedColumns:
    """Source-owned columns copied from another table, e.g. a customer's name onto its jobs.

    Rows of the other table are copied only once they are `ready` (that column is not null), so a
    placeholder row never blanks out a cache that already holds data.
    """

    table: str
    join: tuple[str, str]  # (column here, column there)
    columns: tuple[tuple[str, str], ...]  # (column here, column there)
    ready: str


@dataclass(frozen=True, slots=True)
class Ownership:
    table: Table
    key: str
    version: str
    source: tuple[SourceColumn, ...]
    app: tuple[str, ...]
    cached: tuple[CachedColumns, ...] = ()
    # Filled in by the database, never written by anyone after the insert.
    system: tuple[str, ...] = ("created_at",)
    # Changes at the row's own version are parts of one change: merged, not dropped.
    merge_ties: bool = False
    _by_name: dict[str, SourceColumn] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        by_name = {column.name: column for column in self.source}
        object.__setattr__(self, "_by_name", by_name)
        declared = [
            self.key,
            *by_name,
            *self.app,
            *(name for cached in self.cached for name, _ in cached.columns),
            *self.system,
        ]
        redirects = [c.follows for c in self.source if c.follows is not None]
        for name in [*declared, *(n for r in redirects for n in (r.table, r.key, r.to))]:
            if not _IDENTIFIER.match(name):
                raise OwnershipError(f"{name!r} is not a plain column name")
        actual = {column.name for column in self.table.columns}
        if sorted(declared) != sorted(actual):
            missing = sorted(actual - set(declared))
            extra = sorted(set(declared) - actual)
            raise OwnershipError(
                f"{self.table.name}: every column needs exactly one owner "
                f"(undeclared: {missing}, unknown or repeated: {extra})"
            )
        if self.version not in by_name or by_name[self.version].sticky:
            raise OwnershipError(f"{self.table.name}: the version column must be source-owned")
        for cached in self.cached:
            here = cached.join[0]
            if here not in by_name or by_name[here].sticky:
                # Its cached copy is written by the upsert along with it, under the version.
                raise OwnershipError(f"{self.table.name}.{here}: a cache joins on a plain column")

    @property
    def name(self) -> str:
        return self.table.name

    @property
    def source_columns(self) -> tuple[str, ...]:
        return tuple(column.name for column in self.source)

    @property
    def cached_columns(self) -> tuple[str, ...]:
        return tuple(name for cached in self.cached for name, _ in cached.columns)

    def is_sticky(self, column: str) -> bool:
        return self._by_name[column].sticky

    def follows(self, column: str) -> Redirect | None:
        return self._by_name[column].follows

    def check_writable(self, columns: Iterable[str]) -> None:
        for column in columns:
            if column not in self._by_name:
                owner = "app-owned" if column in self.app else "not a source column"
                raise OwnershipError(f"{self.name}.{column} is {owner}; a consumer cannot write it")
