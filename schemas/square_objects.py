"""The parts of Square's booking and customer objects the projections read.

Unknown fields are allowed and ignored: Square adds fields over time, and a projection should not
dead-letter an event for carrying something new.
"""

from __future__ import annotations

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from schemas.envelope import CloudEvent

_LENIENT = ConfigDict(extra="ignore", frozen=True)


class AppointmentSegment(BaseModel):
    model_config = _LENIENT

    duration_minutes: int | None = Field(default=None, ge=0)
    service_variation_id: str | None = None
    team_member_id: str | None = None


class SquareBooking(BaseModel):
    model_config = _LENIENT

    id: str = Field(min_length=1)
    version: int = Field(ge=0)
    status: str | None = None
    start_at: AwareDatetime | None = None
    location_id: str | None = None
    customer_id: str | None = None
    appointment_segments: list[AppointmentSegment] = Field(default_factory=list)
    updated_at: AwareDatetime | None = None


class SquareCustomer(BaseModel):
    model_config = _LENIENT

    id: str = Field(min_length=1)
    version: int | None = Field(default=None, ge=0)
    given_name: str | None = None
    family_name: str | None = None
    company_name: str | None = None
    nickname: str | None = None
    email_address: str | None = None
    phone_number: str | None = None
    updated_at: AwareDatetime | None = None

    @property
    def display_name(self) -> str | None:
        person = " ".join(p for p in (self.given_name, self.family_name) if p)
        return person or self.company_name or self.nickname


class CustomerMerge(BaseModel):
    model_config = _LENIENT

    from_customer_ids: list[str] = Field(min_length=1)
    to_customer_id: str = Field(min_length=1)


class EventContext(BaseModel):
    model_config = _LENIENT

    merge: CustomerMerge | None = None


class SquareObject(BaseModel):
    model_config = _LENIENT

    booking: SquareBooking | None = None
    customer: SquareCustomer | None = None
    event_context: EventContext | None = None


class SquareChangeData(BaseModel):
    model_config = _LENIENT

    type: str
    id: str = Field(min_length=1)
    deleted: bool | None = None
    object: SquareObject | None = None


class SquareChange(BaseModel):
    """A Square webhook body, read for what changed."""

    model_config = _LENIENT

    type: str
    event_id: str
    created_at: AwareDatetime
    data: SquareChangeData


SquareChangeEvent = CloudEvent[SquareChange]
