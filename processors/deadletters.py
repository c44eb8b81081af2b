"""Dead letters keep the original bytes as the message value; why and where from travel in headers.

Keeping the bytes untouched is what makes a later re-drive exact.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from processors.validate import RawMessage

H_REASON = "autologs-reason"
H_TOPIC = "autologs-source-topic"
H_PARTITION = "autologs-source-partition"
H_OFFSET = "autologs-source-offset"
H_TIMESTAMP = "autologs-source-timestamp-ms"
H_FAILED_AT = "autologs-failed-at"


def dead_letter_headers(msg: RawMessage, reason: str, now: datetime | None = None) -> list[tuple[str, bytes]]:
    now = now or datetime.now(timezone.utc)
    return [
        (H_REASON, reason.encode()),
        (H_TOPIC, msg.topic.encode()),
        (H_PARTITION, str(msg.partition).encode()),
        (H_OFFSET, str(msg.offset).encode()),
        (H_TIMESTAMP, str(msg.timestamp_ms).encode()),
        (H_FAILED_AT, now.isoformat(timespec="milliseconds").encode()),
    ]


@dataclass(frozen=True)
class DeadLetter:
    reason: str
    source_topic: str
    source_partition: int
    source_offset: int
    failed_at: str
    key: bytes | None
    original: bytes | None
    dlq_partition: int = -1
    dlq_offset: int = -1


def parse_dead_letter(headers, key, value, partition: int = -1, offset: int = -1) -> DeadLetter:
    h = {k: (v.decode() if isinstance(v, (bytes, bytearray)) else v) for k, v in (headers or [])}
    return DeadLetter(
        reason=h.get(H_REASON, "?"),
        source_topic=h.get(H_TOPIC, "?"),
        source_partition=int(h.get(H_PARTITION, -1)),
        source_offset=int(h.get(H_OFFSET, -1)),
        failed_at=h.get(H_FAILED_AT, ""),
        key=key,
        original=value,
        dlq_partition=partition,
        dlq_offset=offset,
    )
