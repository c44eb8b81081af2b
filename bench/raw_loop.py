"""Baseline: a plain aiokafka consumer loop doing the worker's job, without Faust.

getmany (large max_records) -> processors.validate.validate_batch -> dead letters (delivered) ->
schemas.rows.event_log_row -> the same INSERT into event_log (ClickHouse.insert, in its thread) ->
manual commit of the batch's offsets. Same settings as the worker (AUTOLOGS_* environment); its own
chdb data dir. Runs until SIGTERM/SIGINT or --max-seconds; reports JSON lines on stdout.

python -m bench.raw_loop --group GROUP [--max-rows N] [--max-seconds S]
"""
from __future__ import annotations

import argparse
import asyncio
import signal
import time


async def run(group: str, max_rows: int, max_seconds: float) -> None:
    from aiokafka import AIOKafkaConsumer

    from autologs.clickhouse import ClickHouse
    from autologs.config import get_settings
    from autologs.migrate import migrate
    from bench.common import emit
    from processors.deadletters import dead_letter_headers
    from processors.validate import RawMessage, validate_batch
    from schemas.rows import EVENT_LOG_COLUMNS, Source, event_log_row
    from streams.produce import new_producer
    from streams.topics import ensure_topics, topics

    settings = get_settings()
    await ensure_topics(settings)
    ch = ClickHouse(settings)
    migrate(ch)
    t = topics(settings)
    producer = new_producer(settings)
    await producer.start()
    consumer = AIOKafkaConsumer(t.events, bootstrap_servers=settings.kafka_bootstrap, group_id=group,
                                enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    deadline = time.monotonic() + max_seconds
    written = 0
    emit(status="ready")
    try:
        while not stop.is_set() and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=settings.sink_max_delay_ms, max_records=max_rows)
            if not batches:
                continue
            msgs = [RawMessage(tp.topic, tp.partition, m.offset, m.key, m.value, m.timestamp)
                    for tp, ms in batches.items() for m in ms]
            checked = validate_batch(msgs)
            if checked.invalid:
                pending = [await producer.send(t.dead_letters, key=m.key, value=m.value or b"",
                                               headers=dead_letter_headers(m, reason))
                           for m, reason in checked.invalid]
                await asyncio.gather(*pending)
            rows = [event_log_row(ev, Source(m.topic, m.partition, m.offset)) for ev, m in checked.events]
            if rows:
                await ch.run(ch.insert, "event_log", rows, EVENT_LOG_COLUMNS)
            await consumer.commit({tp: ms[-1].offset + 1 for tp, ms in batches.items()})
            written += len(rows)
            emit(rows_written=written, batch=len(msgs), dead_letters=len(checked.invalid))
    finally:
        await consumer.stop()
        await producer.stop()
        ch.close()
        emit(status="stopped", rows_written=written)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--group", required=True, help="consumer group")
    ap.add_argument("--max-rows", type=int, default=None, help="max_records of getmany (default AUTOLOGS_SINK_MAX_ROWS)")
    ap.add_argument("--max-seconds", type=float, default=1800.0, help="stop by itself after this long")
    args = ap.parse_args()
    from autologs.config import get_settings

    asyncio.run(run(args.group, args.max_rows or get_settings().sink_max_rows, args.max_seconds))


if __name__ == "__main__":
    main()
