"""Baseline: a plain aiokafka consumer loop doing the worker's whole job, without Faust.

getmany (large max_records) -> processors.pipeline.Pipeline.start, the worker's own batch step (as in
the worker, a batch is derived while the one before is still being written and the next ones are validated
in the validation process, AUTOLOGS_VALIDATION_PROCESSES)
(validation, dead letters delivered, event-log rows, event-time reorder buffer, scenario log and
enrollment state, the same ClickHouse inserts in the same thread) -> the changed contact states sent
to a compacted changelog topic (delivery awaited), as the worker's Faust table does -> commit, per
partition, up to the first message still held by the reorder buffer. Held events are released by `Pipeline.release_idle`
when getmany comes back empty, as the worker's timer does. Same settings and GC policy as the worker
(AUTOLOGS_*); its own chdb data dir. Runs until SIGTERM/SIGINT or --max-seconds; JSON lines on stdout.

python -m bench.raw_loop --group GROUP [--max-rows N] [--max-seconds S]
"""
from __future__ import annotations

import argparse
import asyncio
import signal
import time


async def run(group: str, max_rows: int, max_seconds: float) -> None:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from autologs.clickhouse import ClickHouse
    from autologs.config import get_settings
    from autologs.migrate import migrate
    from bench.common import ChangelogStates, create_changelog, emit, process_policies, validate_ahead
    from processors.deadletters import dead_letter_headers
    from processors.pipeline import Pipeline
    from processors.validate import RawMessage
    from streams.produce import new_producer
    from streams.topics import ensure_topics, topics

    settings = get_settings()
    await ensure_topics(settings)
    ch = ClickHouse(settings)
    migrate(ch)
    process_policies(settings)  # as in the worker
    t = topics(settings)
    producer = new_producer(settings)
    await producer.start()

    async def send_dead_letters(invalid) -> None:
        pending = [await producer.send(t.dead_letters, key=m.key, value=m.value or b"",
                                       headers=dead_letter_headers(m, reason)) for m, reason in invalid]
        await asyncio.gather(*pending)

    states = ChangelogStates()
    changelog = await create_changelog(settings, group)
    pipeline = Pipeline(settings, ch, send_dead_letters, states, commands_topic=t.commands)
    consumer = AIOKafkaConsumer(t.events, t.commands, bootstrap_servers=settings.kafka_bootstrap, group_id=group,
                                enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    deadline = time.monotonic() + max_seconds
    in_flight: dict[TopicPartition, set[int]] = {}  # offsets read and not yet done (held)
    next_offset: dict[TopicPartition, int] = {}
    committed: dict[TopicPartition, int] = {}

    async def finish(done) -> None:
        sent = [await producer.send(changelog, key=k, value=v) for k, v in states.changes().items()]
        await asyncio.gather(*sent)
        for m in done:
            in_flight[TopicPartition(m.topic, m.partition)].discard(m.offset)
        offsets = {tp: (min(held) if held else next_offset[tp]) for tp, held in in_flight.items()}
        offsets = {tp: o for tp, o in offsets.items() if committed.get(tp) != o}
        if offsets:
            await consumer.commit(offsets)
            committed.update(offsets)

    async def finish_batch(started) -> None:
        await finish(await started)
        emit(rows_written=pipeline.event_sink.stats.rows_written)  # counted once written

    # The next batches are fetched and their validation started (`Pipeline.validate_ahead`) while this one is
    # derived, as the worker's agent does. None: getmany came back empty.
    ahead: asyncio.Queue = asyncio.Queue(maxsize=2)

    async def fetch_ahead() -> None:
        while True:
            batches = await consumer.getmany(timeout_ms=settings.sink_max_delay_ms, max_records=max_rows)
            if not batches:
                await ahead.put(None)
                continue
            msgs = [RawMessage(tp.topic, tp.partition, m.offset, m.key, m.value, m.timestamp)
                    for tp, ms in batches.items() for m in ms]
            for tp, ms in batches.items():
                in_flight.setdefault(tp, set()).update(m.offset for m in ms)  # not committed past until done
                next_offset[tp] = ms[-1].offset + 1
            await ahead.put((msgs, validate_ahead(pipeline, msgs)))

    finishing: asyncio.Task | None = None  # the batch before, still being written (as in the worker)
    fetching = asyncio.ensure_future(fetch_ahead())
    emit(status="ready")
    try:
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                item = await asyncio.wait_for(ahead.get(), 1.0)
            except asyncio.TimeoutError:
                if fetching.done():
                    fetching.result()  # a fetch error is raised here
                continue
            if item is None:
                if finishing is not None:
                    await finishing
                    finishing = None
                await finish(await pipeline.release_idle())
                continue
            msgs, validated = item
            started = await (pipeline.start(msgs, validated=validated) if validated is not None else pipeline.start(msgs))
            if finishing is not None:
                await finishing
            finishing = asyncio.ensure_future(finish_batch(started))
            emit(rows_written=pipeline.event_sink.stats.rows_written, batch=len(msgs),
                 dead_letters=pipeline.stats.dead_letters)
        if finishing is not None:
            await finishing
    finally:
        fetching.cancel()
        await consumer.stop()
        await producer.stop()
        ch.close()
        emit(status="stopped", rows_written=pipeline.event_sink.stats.rows_written)


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
