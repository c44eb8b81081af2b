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
    def redriven(self) -> str:
        """Compacted: one record per dead letter already re-driven, so a re-drive never repeats."""
        return f"{self.prefix}.deadletters.redriven"

    @property
    def app_id(self) -> str:
        """Faust app id: also its consumer group and the prefix of its changelog topics."""
        return f"{self.prefix}-worker"

    def sources(self) -> list[str]:
        return [self.events, self.commands]

    def all(self) -> list[str]:
        return [self.events, self.commands, self.dead_letters, self.redriven]


def topics(settings: Settings) -> Topics:
    return Topics(settings.topic_prefix)


def topic_config(settings: Settings, name: str) -> dict[str, str]:
    """Retention of the topics autologs creates: a replay can only reach what they still hold."""
    if name == topics(settings).redriven:
        return {"cleanup.policy": "compact"}
    hours = settings.topic_retention_hours
    return {"retention.ms": str(int(hours * 3600 * 1000)) if hours > 0 else "-1"}


async def ensure_topics(settings: Settings, names: list[str] | None = None) -> list[str]:
    """Create the topics autologs owns (the broker's auto-creation would pick its own partition count), and
    give the existing ones the configured retention. Returns what it changed or left, in words."""
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
                await admin.create_topics([
                    NewTopic(n, num_partitions=settings.topic_partitions, replication_factor=1,
                             topic_configs=topic_config(settings, n)) for n in missing])
            except TopicAlreadyExistsError:
                pass
        present = [n for n in names if n in existing]
        notes = await _align_existing(admin, settings, present) if present else []
        # Wait until metadata shows them, so a producer right after does not race the creation.
        for _ in range(50):
            if set(names) <= set(await admin.list_topics()):
                break
            await asyncio.sleep(0.1)
        return notes
    finally:
        await admin.close()


# A topic-level setting, as DescribeConfigs reports its source (the others are broker or default values).
_TOPIC_OVERRIDE = 1


async def _align_existing(admin, settings: Settings, names: list[str]) -> list[str]:
    """An existing topic takes the configured retention (a changed AUTOLOGS_TOPIC_RETENTION_HOURS applies at the
    next start, as the tables' TTL does). Its partition count is left: each contact's state lives in its
    partition, so adding partitions would move contacts away from their state."""
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    notes = []
    described = {d["topic"]: len(d["partitions"]) for d in await admin.describe_topics(names)}
    for name, count in described.items():
        if count and count != settings.topic_partitions and name != topics(settings).redriven:
            notes.append(f"{name} keeps its {count} partitions (AUTOLOGS_TOPIC_PARTITIONS={settings.topic_partitions} "
                         "applies to new topics only: each contact's state lives in its partition; to change it, "
                         "use a new AUTOLOGS_TOPIC_PREFIX and replay into it)")
    resources = [ConfigResource(ConfigResourceType.TOPIC, n) for n in names]
    for response in await admin.describe_configs(resources):
        for error, _message, _type, name, entries in response.resources:
            if error:
                continue
            overrides = {e[0]: e[1] for e in entries if e[3] == _TOPIC_OVERRIDE}
            wanted = topic_config(settings, name)
            if all(overrides.get(k) == v for k, v in wanted.items()):
                continue
            # AlterConfigs replaces a topic's whole set of overrides: the others (set with kafka-configs) are kept.
            await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, name, {**overrides, **wanted})])
            was = ", ".join(f"{k}={overrides.get(k, 'broker default')}" for k in wanted)
            notes.append(f"{name}: {', '.join(f'{k}={v}' for k, v in wanted.items())} (was {was})")
    return notes


async def partitions_of(bootstrap: str, topic_names: list[str]):
    """Every TopicPartition of the topics; an error naming a topic that does not exist."""
    from aiokafka import TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics(topic_names)
    finally:
        await admin.close()
    missing = [d["topic"] for d in described if not d["partitions"]]
    if missing:
        raise LookupError(f"no such topic on {bootstrap}: {', '.join(missing)}")
    return [TopicPartition(d["topic"], p["partition"]) for d in described for p in sorted(
        d["partitions"], key=lambda p: p["partition"])]


async def group_lag(bootstrap: str, group: str, topic_names: list[str]) -> int:
    """Messages of `topic_names` that `group` has not committed yet (0 = everything written)."""
    from aiokafka import AIOKafkaConsumer

    parts = await partitions_of(bootstrap, topic_names)
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
