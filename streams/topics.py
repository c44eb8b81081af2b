"""Every Kafka topic name, in one registry, under AUTOLOGS_TOPIC_PREFIX (tests use their own prefix)."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass

from autologs.config import Settings


@dataclass(frozen=True)
class Topics:
    prefix: str

    @property
    def events(self) -> str:
        """Tracker, form, list, email and automation events (JSON), keyed by account:contact."""
        return f"{self.prefix}.events"

    @property
    def commands(self) -> str:
        """Operator commands (manual removals), keyed like the contact's events so they stay in order."""
        return f"{self.prefix}.commands"

    @property
    def dead_letters(self) -> str:
        """Invalid messages: the original bytes, with the reason and source in headers."""
        return f"{self.prefix}.deadletters"

    @property
    def app_id(self) -> str:
        """Faust app id: also its consumer group and the prefix of its changelog topics."""
        return f"{self.prefix}-worker"

    def sources(self) -> list[str]:
        return [self.events, self.commands]

    def all(self) -> list[str]:
        return [self.events, self.commands, self.dead_letters]


def topics(settings: Settings) -> Topics:
    return Topics(settings.topic_prefix)


async def ensure_topics(settings: Settings, names: list[str] | None = None) -> None:
    """Create the topics autologs owns (the broker's auto-creation would pick its own partition count)."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    names = names or topics(settings).all()
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [n for n in names if n not in existing]
        if missing:
            try:
                await admin.create_topics(
                    [NewTopic(n, num_partitions=settings.topic_partitions, replication_factor=1) for n in missing]
                )
            except TopicAlreadyExistsError:
                pass
        # Wait until metadata shows them, so a producer right after does not race the creation.
        for _ in range(50):
            if set(names) <= set(await admin.list_topics()):
                return
            await asyncio.sleep(0.1)
    finally:
        await admin.close()


async def group_lag(bootstrap: str, group: str, topic_names: list[str]) -> int:
    """Messages of `topic_names` that `group` has not committed yet (0 = everything written)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics(topic_names)
    finally:
        await admin.close()
    parts = [TopicPartition(d["topic"], p["partition"]) for d in described for p in d["partitions"]]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        ends = await consumer.end_offsets(parts)
        lag = 0
        for tp in parts:
            lag += max(ends[tp] - ((await consumer.committed(tp)) or 0), 0)
        return lag
    finally:
        await consumer.stop()
