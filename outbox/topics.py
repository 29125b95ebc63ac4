"""Creating the topics the pipeline writes, with the partition count we chose.

Run by `sluice topics ensure` (and by `sluice dev`) before any relay starts: a broker that creates
topics on first use would pick its own partition count, and the key → partition mapping would
change the day someone fixed it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError, for_code

from schemas.topics import Topic, dlq_topic

if TYPE_CHECKING:
    from collections.abc import Iterable

TopicOutcome = Literal["created", "exists", "partitions_differ"]


@dataclass(frozen=True, slots=True)
class EnsuredTopic:
    name: str
    partitions: int
    outcome: TopicOutcome


def pipeline_topics() -> list[str]:
    """Every topic in schemas/topics.py and its dead-letter topic."""
    return [name for topic in Topic for name in (topic.value, dlq_topic(topic.value))]


async def ensure_topics(
    bootstrap_servers: str,
    names: Iterable[str],
    *,
    partitions: int,
    replication_factor: int = 1,
    timeout_ms: int = 10_000,
) -> list[EnsuredTopic]:
    """Create the topics that are missing; report existing ones, never alter them."""
    wanted = list(dict.fromkeys(names))
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=timeout_ms)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [name for name in wanted if name not in existing]
        if missing:
            response = await admin.create_topics(
                [NewTopic(name, partitions, replication_factor) for name in missing],
                timeout_ms=timeout_ms,
            )
            for name, code, *_ in response.topic_errors:
                # Another process may have created it a moment ago: that is success too.
                if code not in (0, TopicAlreadyExistsError.errno):
                    raise for_code(code)(f"creating topic {name}")
        described = await admin.describe_topics(wanted)
    finally:
        await admin.close()
    counts = {entry["topic"]: len(entry["partitions"]) for entry in described}
    results: list[EnsuredTopic] = []
    for name in wanted:
        count = counts.get(name, 0)
        outcome: TopicOutcome
        if name in missing:
            outcome = "created"
        elif count == partitions:
            outcome = "exists"
        else:
            outcome = "partitions_differ"
        results.append(EnsuredTopic(name, count, outcome))
    return results


async def partition_counts(
    bootstrap_servers: str, names: Iterable[str], *, timeout_ms: int = 5_000
) -> dict[str, int]:
    """The partition count of each of `names` that exists; a missing topic is left out."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=timeout_ms)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        present = [name for name in names if name in existing]
        described = await admin.describe_topics(present) if present else []
    finally:
        await admin.close()
    return {entry["topic"]: len(entry["partitions"]) for entry in described}
