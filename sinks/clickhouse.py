"""Batched ClickHouse writes that never give up and never block Faust's event loop.

The caller hands over one batch (bounded by rows and time upstream), awaits `write`, and only then
acks the batch's messages: offsets are committed after the rows are written. While ClickHouse fails,
`write` retries with back-off and does not return, so consumption pauses (backpressure) and memory
stays bounded by the two batches in flight (the next one is derived while one is written).
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Sequence

from autologs.clickhouse import ClickHouse

log = logging.getLogger("autologs.sink")


@dataclass
class SinkStats:
    rows_written: int = 0
    inserts: int = 0
    failures: int = 0
    last_error: str = ""
    insert_seconds: float = 0.0
    failing_since: float = 0.0  # time.monotonic() of the first failure of the writes now retrying; 0: none
    failing_writes: int = 0  # writes now retrying (two batches overlap: one's success must not hide the other)


@dataclass
class ClickHouseSink:
    ch: ClickHouse
    table: str
    columns: Sequence[str]
    retry_max_s: float = 30.0
    retry_first_s: float = 0.05
    stats: SinkStats = field(default_factory=SinkStats)

    async def write(self, rows: list[list]) -> None:
        """Insert `rows` in one query; retry until it succeeds."""
        if not rows:
            return
        delay = self.retry_first_s
        failed = False
        while True:
            started = time.perf_counter()
            try:
                await self.ch.run(self.ch.insert, self.table, rows, self.columns)
            except Exception as exc:  # ClickHouse down, disk full, read-only, ...: all worth a retry
                self.stats.failures += 1
                if not failed:
                    failed = True
                    self.stats.failing_writes += 1
                self.stats.failing_since = self.stats.failing_since or time.monotonic()
                self.stats.last_error = f"{type(exc).__name__}: {exc}"[:500]
                log.warning("insert of %d rows into %s failed (%s); retrying in %.2fs", len(rows), self.table,
                            self.stats.last_error, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_max_s)
                continue
            self.stats.insert_seconds += time.perf_counter() - started
            self.stats.inserts += 1
            self.stats.rows_written += len(rows)
            if failed:
                self.stats.failing_writes -= 1
            if not self.stats.failing_writes:
                self.stats.failing_since = 0.0
            if self.stats.failures and delay > self.retry_first_s:
                log.warning("insert into %s succeeded again after retries", self.table)
            return
