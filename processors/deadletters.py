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
H_REDRIVE_OF = "autologs-redrive-of"  # on a re-driven message, and on its dead letter if it fails again


def dead_letter_headers(msg: RawMessage, reason: str, now: datetime | None = None) -> list[tuple[str, bytes]]:
    now = now or datetime.now(timezone.utc)
    return [
        (H_REASON, reason.encode()),
        (H_TOPIC, msg.topic.encode()),
        (H_PARTITION, str(msg.partition).encode()),
        (H_OFFSET, str(msg.offset).encode()),
        (H_TIMESTAMP, str(msg.timestamp_ms).encode()),
        (H_FAILED_AT, now.isoformat(timespec="milliseconds").encode()),
        *((k, v) for k, v in msg.headers if k == H_REDRIVE_OF),
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
    redrive_of: str = ""  # set when this letter is a re-driven message that failed again
    timestamp_ms: int = 0  # when the dead letter was written
    source_timestamp_ms: int = 0  # the original message's Kafka timestamp

    @property
    def id(self) -> str:
        return f"{self.dlq_partition}:{self.dlq_offset}"

    @property
    def event_type(self) -> str:
        """The `type` of the original message when it can be read, for filtering."""
        import orjson

        try:
            value = orjson.loads(self.original or b"")
            return str(value.get("type", "?")) if isinstance(value, dict) else "not-an-object"
        except orjson.JSONDecodeError:
            return "not-json"


def parse_dead_letter(headers, key, value, partition: int = -1, offset: int = -1, timestamp_ms: int = 0) -> DeadLetter:
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
        redrive_of=h.get(H_REDRIVE_OF, ""),
        timestamp_ms=timestamp_ms,
        source_timestamp_ms=int(h.get(H_TIMESTAMP) or 0),
    )
