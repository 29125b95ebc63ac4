"""What the ingest app holds while it runs; created by the lifespan, never at import."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from ingest.group_commit import GroupCommitWriter
    from sluice.settings import Settings


@dataclass(frozen=True, slots=True)
class IngestState:
    settings: Settings
    engine: AsyncEngine
    writer: GroupCommitWriter
