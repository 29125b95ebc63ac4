"""JSON Schema for every topic's payload, generated from the models in `schemas/`."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from schemas.airtable import AirtablePing, RecordEvent
from schemas.app_api import AppChange
from schemas.envelope import CloudEvent
from schemas.square import SquareEvent
from schemas.topics import Topic

if TYPE_CHECKING:
    from pathlib import Path

    from pydantic import BaseModel

PAYLOAD_MODELS: dict[Topic, type[BaseModel]] = {
    Topic.SQUARE_BOOKINGS: CloudEvent[SquareEvent],
    Topic.SQUARE_CUSTOMERS: CloudEvent[SquareEvent],
    Topic.SQUARE_EVENTS: CloudEvent[SquareEvent],
    Topic.AIRTABLE_PINGS: CloudEvent[AirtablePing],
    Topic.AIRTABLE_RECORDS: CloudEvent[RecordEvent],
    Topic.APP_CHANGES: CloudEvent[AppChange],
}


def topic_schema(topic: Topic) -> dict[str, Any]:
    schema = PAYLOAD_MODELS[topic].model_json_schema(mode="serialization")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = f"{topic.value} payload"
    return schema


def export_schemas(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for topic in PAYLOAD_MODELS:
        path = directory / f"{topic.value}.schema.json"
        path.write_text(json.dumps(topic_schema(topic), indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written
