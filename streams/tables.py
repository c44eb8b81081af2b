"""Faust tables. `enrollments`: each contact's scenario state, keyed like the events (account:contact).

Changelog-backed, so a restarted or rebalanced worker recovers it. `use_partitioner`: the changelog
record for a key goes to the partition Kafka's default partitioner picks for that key, which is the
partition of the contact's events (same key bytes, same partition count).
"""
from __future__ import annotations

from streams.app import app, settings

enrollments = app.Table(
    "enrollments",
    default=None,
    partitions=settings.topic_partitions,
    key_type=bytes,  # bytes -> the "raw" codec for the changelog too (recovery decodes with it)
    value_type=bytes,
    use_partitioner=True,
    help="Per contact (account:contact): its enrollments, remembered sends, and the applied mark",
)
