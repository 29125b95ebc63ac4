"""Which fields of a request body name columns the API may not write, from the ownership
declaration of the projection (schemas/projections.py, schemas/leads.py), never a list here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

    from schemas.ownership import Ownership


def source_owned(ownership: Ownership, fields: Iterable[str]) -> list[str]:
    """Fields that are columns written by the source (or by the database): never by staff."""
    not_ours = {
        ownership.key,
        *ownership.source_columns,
        *ownership.cached_columns,
        *ownership.system,
    }
    return sorted(f for f in fields if f in not_ours)
