"""The canonical envelope every topic carries: CloudEvents 1.0 attributes plus sluice extensions.

Extension attribute names follow the CloudEvents rule (lower-case letters and digits only).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

from pydantic import AwareDatetime, BaseModel, ConfigDict

if TYPE_CHECKING:
    from datetime import datetime

DataT = TypeVar("DataT")


class CloudEvent(BaseModel, Generic[DataT]):
    model_config = ConfigDict(frozen=True)

    specversion: Literal["1.0"] = "1.0"
    id: str
    source: str
    type: str
    subject: str | None = None
    time: AwareDatetime
    datacontenttype: Literal["application/json"] = "application/json"
    data: DataT
    # sluice extensions
    providereventid: str
    receivedat: AwareDatetime
    entitytype: str | None = None

    def kafka_headers(self) -> dict[str, str]:
        """CloudEvents Kafka binary-mode headers (`ce_` prefix) for this event."""
        headers = {
            "ce_specversion": self.specversion,
            "ce_id": self.id,
            "ce_source": self.source,
            "ce_type": self.type,
            "ce_time": _iso(self.time),
            "ce_providereventid": self.providereventid,
            "ce_receivedat": _iso(self.receivedat),
            "content-type": self.datacontenttype,
        }
        if self.subject is not None:
            headers["ce_subject"] = self.subject
        if self.entitytype is not None:
            headers["ce_entitytype"] = self.entitytype
        return headers


def encode_with_raw_data(event: CloudEventHead, data_json: str) -> str:
    """The event as JSON text, with `data` spliced in verbatim from already-valid JSON.

    The provider's body goes into the envelope exactly as it arrived, without a decode and
    re-encode that could change numbers or fail on values Python cannot round-trip.
    """
    head = event.model_dump_json(exclude={"data"})
    return f'{head[:-1]},"data":{data_json}}}'


def _iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


AnyCloudEvent = CloudEvent[dict[str, Any]]
# The attributes alone, for envelopes whose data is spliced in as raw JSON. Parametrise once:
# `CloudEvent[None]` in a hot path would build a new class per call.
CloudEventHead = CloudEvent[None]
