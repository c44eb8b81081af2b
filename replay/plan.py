"""Which offsets a replay reads: a time range resolved to offsets, refused when it cannot be honoured."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from aiokafka import AIOKafkaConsumer, TopicPartition


class ReplayRefused(RuntimeError):
    """Nothing was changed; the message says why and what to do."""


@dataclass
class ReplayPlan:
    ranges: dict[TopicPartition, tuple[int, int]]  # [start, end) per partition
    full: bool  # from the beginning of every topic: the state tables can be rebuilt from the events alone

    @property
    def total(self) -> int:
        return sum(end - start for start, end in self.ranges.values())

    def to_json(self) -> dict:
        return {"full": self.full,
                "ranges": [[tp.topic, tp.partition, s, e] for tp, (s, e) in sorted(self.ranges.items())]}

    @classmethod
    def from_json(cls, data: dict) -> "ReplayPlan":
        return cls({TopicPartition(t, p): (s, e) for t, p, s, e in data["ranges"]}, data["full"])


def _ms(t: datetime) -> int:
    return int((t if t.tzinfo else t.replace(tzinfo=timezone.utc)).timestamp() * 1000)


async def plan_replay(bootstrap: str, topic_names: list[str], t_from: datetime | None,
                      t_to: datetime | None) -> ReplayPlan:
    if t_from and t_to and t_from >= t_to:
        raise ReplayRefused(f"--from {t_from.isoformat()} is not before --to {t_to.isoformat()}")
    from streams.topics import partitions_of

    try:
        parts = await partitions_of(bootstrap, topic_names)
    except LookupError as exc:
        raise ReplayRefused(f"{exc}: check AUTOLOGS_TOPIC_PREFIX") from None
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        begin, end = await consumer.beginning_offsets(parts), await consumer.end_offsets(parts)
        starts = dict(begin)
        if t_from:
            found = await consumer.offsets_for_times({tp: _ms(t_from) for tp in parts})
            for tp in parts:
                starts[tp] = found[tp].offset if found[tp] else end[tp]
            await _check_retention(consumer, parts, begin, _ms(t_from))
        elif any(begin[tp] > 0 for tp in parts):
            lost = ", ".join(f"{tp.topic}[{tp.partition}] from offset {begin[tp]}" for tp in parts if begin[tp] > 0)
            raise ReplayRefused(f"the topics no longer hold their beginning (retention): {lost}. A full rebuild "
                                "needs every event; replay a range with --from (and --in-place) instead.")
        ends = dict(end)
        if t_to:
            found = await consumer.offsets_for_times({tp: _ms(t_to) for tp in parts})
            for tp in parts:
                ends[tp] = found[tp].offset if found[tp] else end[tp]
        plan = ReplayPlan({tp: (starts[tp], max(starts[tp], ends[tp])) for tp in parts}, full=t_from is None)
    finally:
        await consumer.stop()
    if plan.total == 0:
        raise ReplayRefused("the requested range holds no message: nothing to replay (check --from/--to and the "
                            "topic prefix)")
    return plan


async def _check_retention(consumer: AIOKafkaConsumer, parts: list[TopicPartition], begin: dict, from_ms: int) -> None:
    """Refuse when messages older than the earliest one kept were asked for and have been deleted."""
    for tp in parts:
        if begin[tp] == 0:
            continue
        consumer.assign([tp])
        consumer.seek(tp, begin[tp])
        batch = await consumer.getmany(tp, timeout_ms=5000, max_records=1)
        records = batch.get(tp, [])
        if records and records[0].timestamp > from_ms:
            kept = datetime.fromtimestamp(records[0].timestamp / 1000, tz=timezone.utc).isoformat()
            raise ReplayRefused(f"{tp.topic}[{tp.partition}] keeps messages from {kept} only (retention): "
                                f"replay from that time or later")
