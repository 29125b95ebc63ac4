"""The canonical envelope every topic carries: CloudEvents 1.0 attributes plus sluice extensions.

Extension attribute names follow the CloudEvents rule (lower-case letters and digits only).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

from pydantic import AwareDatetime, BaseModel, ConfigDict
from pydantic_core import to_json

if TYPE_CHECKING:
    from datetime import datetime

DataT = TypeVar("DataT")
SPECVERSION: Literal["1.0"] = "1.0"
DATACONTENTTYPE: Literal["application/json"] = "application/json"


class CloudEvent(BaseModel, Generic[DataT]):
    model_config = ConfigDict(frozen=True)

    specversion: Literal["1.0"] = SPECVERSION
    id: str
    source: str
    type: str
    subject: str | None = None
    time: AwareDatetime
    datacontenttype: Literal["application/json"] = DATACONTENTTYPE
    data: DataT
    # sluice extensions
    providereventid: str
    receivedat: AwareDatetime
    entitytype: str | None = None

    def kafka_headers(self) -> dict[str, str]:
        """CloudEvents Kafka binary-mode headers (`ce_` prefix) for this event."""
        return _kafka_headers(self)


@dataclass(frozen=True, slots=True)
class EventHead:
    """A CloudEvent's attributes, for an event whose `data` is spliced in as raw JSON.

    Encodes exactly as `CloudEvent` does (tests/test_envelope.py holds them to it) but without
    validating a pydantic model per event: producers build their attributes from values that
    were validated already, and this runs once per delivery.
    """

    id: str
    source: str
    type: str
    subject: str | None
    time: datetime
    providereventid: str
    receivedat: datetime
    entitytype: str | None = None

    def attributes(self) -> dict[str, str | None]:
        """The attributes as `CloudEvent` serialises them, in its field order, without `data`."""
        return {
            "specversion": SPECVERSION,
            "id": self.id,
            "source": self.source,
            "type": self.type,
            "subject": self.subject,
            "time": _iso(self.time),
            "datacontenttype": DATACONTENTTYPE,
            "providereventid": self.providereventid,
            "receivedat": _iso(self.receivedat),
            "entitytype": self.entitytype,
        }

    def kafka_headers(self) -> dict[str, str]:
        """CloudEvents Kafka binary-mode headers (`ce_` prefix) for this event."""
        return _kafka_headers(self)


def encode_with_raw_data(event: EventHead, data_json: str) -> str:
    """The event as JSON text, with `data` spliced in verbatim from already-valid JSON.

    The provider's body goes into the envelope exactly as it arrived, without a decode and
    re-encode that could change numbers or fail on values Python cannot round-trip.
    """
    head = to_json(event.attributes()).decode()
    return f'{head[:-1]},"data":{data_json}}}'


def _kafka_headers(event: CloudEvent[Any] | EventHead) -> dict[str, str]:
    headers = {
        "ce_specversion": SPECVERSION,
        "ce_id": event.id,
        "ce_source": event.source,
        "ce_type": event.type,
        "ce_time": _iso(event.time),
        "ce_providereventid": event.providereventid,
        "ce_receivedat": _iso(event.receivedat),
        "content-type": DATACONTENTTYPE,
    }
    if event.subject is not None:
        headers["ce_subject"] = event.subject
    if event.entitytype is not None:
        headers["ce_entitytype"] = event.entitytype
    return headers


def _iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


AnyCloudEvent = CloudEvent[dict[str, Any]]
