"""Moving a consumer group's committed offsets, so its consumers read a topic again.

Refuses while the group has members: a live consumer would overwrite the new offsets with its
own at its next commit. The offsets are committed by a consumer in that group that joins no
subscription (manual assignment), which commits with generation -1 — accepted by the broker
only for a group with no members, the same rule Kafka's own offset-reset tool follows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import OffsetAndMetadata

if TYPE_CHECKING:
    from collections.abc import Mapping
    from datetime import datetime


class GroupActiveError(Exception):
    """The group has live members; stop its consumers first."""


class UnknownTopicError(Exception):
    """The broker does not know the topic."""


@dataclass(frozen=True, slots=True)
class ToDatetime:
    at: datetime


@dataclass(frozen=True, slots=True)
class ToEarliest:
    pass


@dataclass(frozen=True, slots=True)
class Shift:
    by: int  # negative: read the last N messages of each partition again


Target = ToDatetime | ToEarliest | Shift


@dataclass(frozen=True, slots=True)
class PartitionMove:
    partition: int
    before: int | None  # None: the group had no committed offset
    after: int

    def as_json(self) -> dict[str, Any]:
        return {"partition": self.partition, "from": self.before, "to": self.after}


async def describe_group(bootstrap_servers: str, group: str) -> tuple[str, list[str]]:
    """The group's state (`Stable`, `PreparingRebalance`, `Empty`, ...) and its member ids."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        responses = await admin.describe_consumer_groups([group])
    finally:
        await admin.close()
    state = ""
    members: list[str] = []
    for response in responses:
        for described in response.groups:
            # A DescribeGroups entry: error code, group, state, protocol type, protocol, members.
            state = str(described[2])
            members.extend(str(member[0]) for member in described[5])
    return state, members


async def group_members(bootstrap_servers: str, group: str) -> list[str]:
    _, members = await describe_group(bootstrap_servers, group)
    return members


async def reset_offsets(
    bootstrap_servers: str, topic: str, group: str, target: Target, *, dry_run: bool = False
) -> list[PartitionMove]:
    members = await group_members(bootstrap_servers, group)
    if members:
        raise GroupActiveError(
            f"group {group} has {len(members)} live member(s); stop its consumers first"
        )
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            raise UnknownTopicError(f"topic {topic} does not exist")
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        earliest: Mapping[TopicPartition, int] = await consumer.beginning_offsets(tps)
        latest: Mapping[TopicPartition, int] = await consumer.end_offsets(tps)
        before = {tp: await consumer.committed(tp) for tp in tps}
        after = await _targets(
            consumer, tps, target, earliest=earliest, latest=latest, before=before
        )
        if not dry_run:
            await consumer.commit({tp: OffsetAndMetadata(after[tp], "") for tp in tps})
    finally:
        await consumer.stop()
    return [PartitionMove(tp.partition, before[tp], after[tp]) for tp in tps]


async def _targets(  # noqa: PLR0913 - what the choice depends on
    consumer: AIOKafkaConsumer,
    tps: list[TopicPartition],
    target: Target,
    *,
    earliest: Mapping[TopicPartition, int],
    latest: Mapping[TopicPartition, int],
    before: Mapping[TopicPartition, int | None],
) -> dict[TopicPartition, int]:
    if isinstance(target, ToEarliest):
        return {tp: earliest[tp] for tp in tps}
    if isinstance(target, Shift):
        return {
            tp: min(latest[tp], max(earliest[tp], _current(before[tp], latest[tp]) + target.by))
            for tp in tps
        }
    millis = int(target.at.timestamp() * 1000)
    found = await consumer.offsets_for_times(dict.fromkeys(tps, millis))
    moved: dict[TopicPartition, int] = {}
    for tp in tps:
        hit = found.get(tp)
        # No message at or after the time: the end. (Some brokers answer timestamp -1 for that.)
        if hit is None or hit.timestamp < 0:
            moved[tp] = latest[tp]
        else:
            moved[tp] = max(earliest[tp], hit.offset)
    return moved


def _current(committed: int | None, latest: int) -> int:
    return latest if committed is None else committed
