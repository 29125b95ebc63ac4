"""`EventHead` encodes exactly as the `CloudEvent` model it stands in for on the hot path."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from schemas.envelope import CloudEvent, EventHead, encode_with_raw_data

TIMES = [
    datetime(2026, 11, 22, 3, 30, 10, tzinfo=UTC),
    datetime(2026, 11, 22, 3, 30, 10, 123456, tzinfo=UTC),
    datetime(2026, 11, 22, 3, 30, 10, 120000, tzinfo=UTC),
    datetime(2026, 1, 2, 23, 59, 59, 1, tzinfo=timezone(timedelta(hours=-5))),
]


@pytest.mark.parametrize("when", TIMES)
@pytest.mark.parametrize("subject", ["bk1", None])
def test_event_head_encodes_as_the_model(when: datetime, subject: str | None) -> None:
    attributes = {
        "id": "4b0f3c1e-2d7a-4c55-9f1e-6a2f0d9c8b71",
        "source": "square",
        "type": "booking.created",
        "subject": subject,
        "time": when,
        "providereventid": "evt-1",
        "receivedat": when + timedelta(microseconds=7),
        "entitytype": "booking" if subject else None,
    }
    head = EventHead(**attributes)  # type: ignore[arg-type]
    model = CloudEvent[None](data=None, **attributes)
    data = '{"a": 1,  "b": [1.50, "x"]}'

    encoded = encode_with_raw_data(head, data)

    assert encoded == model.model_dump_json(exclude={"data"})[:-1] + f',"data":{data}}}'
    decoded = CloudEvent[dict[str, object]].model_validate_json(encoded)
    assert decoded.model_dump(exclude={"data"}) == model.model_dump(exclude={"data"})
    assert json.loads(encoded)["data"] == json.loads(data)
    assert head.kafka_headers() == model.kafka_headers()
