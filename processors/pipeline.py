"""What happens to one batch of messages, independent of Faust so that it is tested on its own.

validate -> dead letters (delivered) -> event-log rows (written) -> return; the caller acks after.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Awaitable, Callable

from autologs.clickhouse import ClickHouse
from autologs.config import Settings
from processors.validate import RawMessage, validate_batch
from schemas.rows import EVENT_LOG_COLUMNS, Source, event_log_row
from sinks.clickhouse import ClickHouseSink

log = logging.getLogger("autologs.pipeline")

DeadLetterSender = Callable[[list[tuple[RawMessage, str]]], Awaitable[None]]


@dataclass
class PipelineStats:
    messages: int = 0
    events: int = 0
    dead_letters: int = 0


@dataclass
class Pipeline:
    settings: Settings
    ch: ClickHouse
    send_dead_letters: DeadLetterSender
    stats: PipelineStats = field(default_factory=PipelineStats)

    def __post_init__(self) -> None:
        self.event_sink = ClickHouseSink(self.ch, "event_log", EVENT_LOG_COLUMNS, self.settings.sink_retry_max_s)

    async def handle(self, messages: list[RawMessage]) -> None:
        checked = validate_batch(messages)
        if checked.invalid:
            for msg, reason in checked.invalid:
                log.info("dead letter %s[%d]@%d: %s", msg.topic, msg.partition, msg.offset, reason)
            await self.send_dead_letters(checked.invalid)
        rows = [event_log_row(ev, Source(m.topic, m.partition, m.offset)) for ev, m in checked.events]
        await self.event_sink.write(rows)
        self.stats.messages += len(messages)
        self.stats.events += len(checked.events)
        self.stats.dead_letters += len(checked.invalid)
