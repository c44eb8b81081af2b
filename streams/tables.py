"""Faust tables. `enrollments`: each contact's scenario state, keyed like the events (account:contact).

Changelog-backed, so a restarted or rebalanced worker recovers it. A contact's changelog record goes to
the partition its events came from (`TableStates`), whatever partitioner the producers use: the worker
that reads partition p recovers changelog partition p (Faust co-partitions them).
"""
from __future__ import annotations

from streams.app import app, settings

enrollments = app.Table(
    "enrollments",
    default=None,
    partitions=settings.topic_partitions,
    key_type=bytes,  # bytes -> the "raw" codec for the changelog too (recovery decodes with it)
    value_type=bytes,
    help="Per contact (account:contact): its enrollments, remembered sends, and the applied mark",
)


class TableStates:
    """The pipeline's view of `enrollments`: reads, and a batch's changes saved in one pass.

    Faust's `table[key] = value` would pick the changelog partition with the producer's partitioner
    (or the current event's, which a batch agent does not have); here it is the events' partition.
    """

    def __init__(self, table) -> None:
        self.table = table

    def get(self, key: bytes) -> bytes | None:
        return self.table.get(key)

    def remember(self, changed: dict[bytes, tuple[int, bytes]]) -> None:
        store = self.table.data
        for key, (_partition, raw) in changed.items():
            store[key] = raw

    async def publish(self, changed: dict[bytes, tuple[int, bytes]]) -> None:
        """All of a batch's states at once, straight to the worker's producer, so that they travel in a few
        requests: `send_changelog` hands each one to Faust's producer buffer, which sends them one by one,
        a produce request each. Faust flushes this producer before it commits offsets, so a commit never
        passes a state that is not delivered. (The memory store keeps no changelog offsets to record.)"""
        topic, send = self.table.changelog_topic_name, self.table.app.producer.send
        for key, (partition, raw) in changed.items():
            await send(topic, key, raw, partition, None, None)
