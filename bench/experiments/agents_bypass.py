"""Prototype: the Faust worker keeps its app (web, tables, other agents) but event-log ingestion runs as
an app task with its own aiokafka consumer taking whole batches (getmany), not Faust's per-message stream.

Same validation (validate_batch), rows (event_log_row), insert (ClickHouse.insert in its thread), dead
letters delivered before the commit; the batch's offsets are committed right after its insert.
BENCH_PIPELINE=1: the insert+commit of batch k runs while batch k+1 is fetched and validated (at most one
in flight). Consumer group: BENCH_APP_ID (Faust's own app id: BENCH_FAUST_APP_ID).
"""
from __future__ import annotations

import asyncio
import logging
import os
import time

from aiokafka import AIOKafkaConsumer

from autologs.clickhouse import ClickHouse
from processors.deadletters import dead_letter_headers
from processors.validate import RawMessage, validate_batch
from schemas.rows import EVENT_LOG_COLUMNS, Source, event_log_row
from sinks.clickhouse import SinkStats
from streams.app import app, settings
from streams.channels import dead_letters_topic
from streams.topics import topics

log = logging.getLogger("autologs.bench.bypass")
PIPELINE = os.environ.get("BENCH_PIPELINE", "0") == "1"
GROUP = os.environ.get("BENCH_APP_ID") or topics(settings).app_id + "-events"


class Stats:
    messages = events = dead_letters = 0
    sink = SinkStats()


_ch: ClickHouse | None = None


def ch() -> ClickHouse:
    global _ch
    if _ch is None:
        _ch = ClickHouse(settings)
    return _ch


def pipeline_stats() -> dict:
    return {"messages": Stats.messages, "events": Stats.events, "dead_letters": Stats.dead_letters,
            "rows_written": Stats.sink.rows_written, "sink_failures": Stats.sink.failures,
            "insert_s": round(Stats.sink.insert_seconds, 3)}


def pipeline():
    class _P:
        pass
    p = _P()
    p.ch = ch()
    return p


async def write(rows: list[list]) -> None:
    delay = 0.05
    while rows:
        t = time.perf_counter()
        try:
            await ch().run(ch().insert, "event_log", rows, EVENT_LOG_COLUMNS)
        except Exception as exc:
            Stats.sink.failures += 1
            log.warning("insert failed (%r); retrying in %.2fs", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, settings.sink_retry_max_s)
            continue
        Stats.sink.insert_seconds += time.perf_counter() - t
        Stats.sink.rows_written += len(rows)
        return


@app.task
async def ingest_events_batches() -> None:
    t = topics(settings)
    consumer = AIOKafkaConsumer(t.events, bootstrap_servers=settings.kafka_bootstrap, group_id=GROUP,
                                enable_auto_commit=False, auto_offset_reset="earliest",
                                session_timeout_ms=int(settings.session_timeout_s * 1000))
    await consumer.start()
    pending: asyncio.Task | None = None

    async def write_commit(rows, offsets):
        await write(rows)
        await consumer.commit(offsets)

    try:
        while True:
            batches = await consumer.getmany(timeout_ms=settings.sink_max_delay_ms, max_records=settings.sink_max_rows)
            if not batches:
                continue
            msgs = [RawMessage(tp.topic, tp.partition, m.offset, m.key, m.value, m.timestamp)
                    for tp, ms in batches.items() for m in ms]
            checked = validate_batch(msgs)
            if checked.invalid:
                sent = [await dead_letters_topic.send(key=m.key, value=m.value or b"", headers=dead_letter_headers(m, r))
                        for m, r in checked.invalid]
                await asyncio.gather(*sent)
            rows = [event_log_row(ev, Source(m.topic, m.partition, m.offset)) for ev, m in checked.events]
            offsets = {tp: ms[-1].offset + 1 for tp, ms in batches.items()}
            Stats.messages += len(msgs)
            Stats.events += len(checked.events)
            Stats.dead_letters += len(checked.invalid)
            if PIPELINE:
                if pending is not None:
                    await pending
                pending = asyncio.ensure_future(write_commit(rows, offsets))
            else:
                await write_commit(rows, offsets)
    finally:
        if pending is not None:
            await pending
        await consumer.stop()
