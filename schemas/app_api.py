"""The App API's shapes: request bodies, and the `app.changes` message every change announces.

Bodies refuse unknown fields, so a typo never passes silently; which columns a body may touch at
all is checked against the projection's ownership first (api/ownership_check.py), so writing a
source-owned column is answered with that column's name.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

WorkStatus = Literal[
    "scheduled", "en_route", "in_progress", "on_hold", "completed", "cancelled", "no_show"
]

MAX_ACTOR_LENGTH = 200
MAX_ID_LENGTH = 255  # Square and Airtable ids are a few dozen characters

Actor = Field(
    min_length=1, max_length=MAX_ACTOR_LENGTH, description="who makes the change (a staff id)"
)
RowId = Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ChecklistItem(_Body):
    item: str = Field(min_length=1, max_length=500)
    done: bool = False


class Photo(_Body):
    url: str = Field(min_length=1, max_length=2000)
    caption: str | None = Field(default=None, max_length=1000)
    taken_at: AwareDatetime | None = None


class Payment(_Body):
    method: Literal["cash", "card", "check", "transfer", "other"]
    amount_cents: int = Field(ge=0, le=100_000_000)
    currency: str = Field(default="USD", pattern="^[A-Z]{3}$")
    paid_at: AwareDatetime | None = None
    reference: str | None = Field(default=None, max_length=200)


class VehicleInfo(_Body):
    make: str | None = Field(default=None, max_length=100)
    model: str | None = Field(default=None, max_length=100)
    year: int | None = Field(default=None, ge=1900, le=2100)
    color: str | None = Field(default=None, max_length=50)
    plate: str | None = Field(default=None, max_length=20)
    vin: str | None = Field(default=None, max_length=17)


_LIST_COLUMNS = ("checklist", "photos_meta", "receipt_photos")


class JobPatch(_Body):
    """Staff work on one job. Only the fields sent are written; `null` clears a value."""

    actor: str = Actor
    work_status: WorkStatus | None = None
    checklist: list[ChecklistItem] | None = Field(default=None, max_length=200)
    notes: str | None = Field(default=None, max_length=10_000)
    photos_meta: list[Photo] | None = Field(default=None, max_length=200)
    receipt_photos: list[Photo] | None = Field(default=None, max_length=200)
    payment: Payment | None = None
    vehicle_info: VehicleInfo | None = None
    post_completion_issue: str | None = Field(default=None, max_length=10_000)

    @model_validator(mode="after")
    def _lists_and_status_not_null(self) -> JobPatch:
        for name in (*_LIST_COLUMNS, "work_status"):
            if name in self.model_fields_set and getattr(self, name) is None:
                raise ValueError(f"{name} cannot be null")
        return self


class BulkStatus(_Body):
    """One work status for many jobs: all change, or none does."""

    actor: str = Actor
    ids: list[RowId] = Field(min_length=1, max_length=500)
    work_status: WorkStatus

    @model_validator(mode="after")
    def _unique(self) -> BulkStatus:
        if len(set(self.ids)) != len(self.ids):
            raise ValueError("ids must be unique")
        return self


class LeadPatch(_Body):
    actor: str = Actor
    notes: str | None = Field(default=None, max_length=10_000)


class Claim(_Body):
    actor: str = Actor


class Unclaim(_Body):
    actor: str = Actor
    force: bool = Field(default=False, description="release a lead someone else claimed")


class Resolve(_Body):
    actor: str = Actor
    keep: Literal["app", "airtable"] = Field(
        description="app: push the app's value again; airtable: adopt Airtable's value"
    )
    columns: list[Annotated[str, Field(min_length=1, max_length=64)]] | None = Field(
        default=None,
        min_length=1,
        max_length=20,
        description="the conflicting columns to resolve (default: all)",
    )


class Retry(_Body):
    actor: str = Actor


class AppChange(BaseModel):
    """`data` of an `app.changes` event: which app-owned columns of which row staff changed."""

    model_config = ConfigDict(frozen=True)

    entity: Literal["jobs", "leads"]
    id: str
    columns: list[str]
    actor: str
    changed_at: AwareDatetime
