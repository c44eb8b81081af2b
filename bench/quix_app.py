"""Peer: a quixstreams Application doing the worker's job.

Consume raw bytes -> a BatchingSink whose flush (at each checkpoint: every --commit-every messages
or --commit-interval seconds) validates the whole checkpoint with processors.validate.validate_batch,
dead-letters the invalid ones (delivered before the commit), builds rows with schemas.rows.event_log_row
and writes them in ONE insert into event_log (ClickHouse.insert, as the worker does). Quix commits
the offsets only after the sink's flush returned. Own chdb data dir (AUTOLOGS_DATA_DIR).
Runs until SIGTERM/SIGINT (quix handles them) or --max-seconds; reports JSON lines on stdout.

python -m bench.quix_app --group GROUP [--commit-every N] [--commit-interval S] [--max-seconds S]
"""
from __future__ import annotations

import argparse
import os
import signal
import threading


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--group", required=True)
    ap.add_argument("--commit-every", type=int, default=None, help="default AUTOLOGS_SINK_MAX_ROWS")
    ap.add_argument("--commit-interval", type=float, default=None, help="default AUTOLOGS_SINK_MAX_DELAY_MS")
    ap.add_argument("--max-seconds", type=float, default=1800.0)
    args = ap.parse_args()

    from confluent_kafka import Producer
    from quixstreams import Application
    from quixstreams.sinks import BatchingSink

    from autologs.clickhouse import ClickHouse
    from autologs.config import get_settings
    from autologs.migrate import migrate
    from bench.common import emit
    from processors.deadletters import dead_letter_headers
    from processors.validate import RawMessage, validate_batch
    from schemas.rows import EVENT_LOG_COLUMNS, Source, event_log_row
    from streams.topics import ensure_topics, topics
    import asyncio

    settings = get_settings()
    asyncio.run(ensure_topics(settings))
    t = topics(settings)
    ch = ClickHouse(settings)
    migrate(ch)

    class EventLogSink(BatchingSink):
        written = 0

        def __init__(self):
            super().__init__()
            self.dlq = Producer({"bootstrap.servers": settings.kafka_bootstrap, "acks": "all",
                                 "enable.idempotence": True})

        def write(self, batch):  # unused: flush() writes every partition's batch in one insert
            raise NotImplementedError

        def flush(self):
            try:
                msgs = [RawMessage(b.topic, b.partition, item.offset, item.key, item.value, item.timestamp)
                        for b in self._batches.values() for item in b._buffer]
                if not msgs:
                    return
                checked = validate_batch(msgs)
                for m, reason in checked.invalid:
                    self.dlq.produce(t.dead_letters, key=m.key, value=m.value or b"",
                                     headers=dead_letter_headers(m, reason))
                if checked.invalid and self.dlq.flush(30) > 0:
                    raise RuntimeError("dead letters not delivered")
                rows = [event_log_row(ev, Source(m.topic, m.partition, m.offset)) for ev, m in checked.events]
                if rows:
                    ch.insert("event_log", rows, EVENT_LOG_COLUMNS)
                EventLogSink.written += len(rows)
                emit(rows_written=EventLogSink.written, batch=len(msgs), dead_letters=len(checked.invalid))
            finally:
                self._batches.clear()

    app = Application(
        broker_address=settings.kafka_bootstrap,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        commit_every=args.commit_every or settings.sink_max_rows,
        commit_interval=args.commit_interval or settings.sink_max_delay_ms / 1000,
        state_dir=str(settings.data_dir / "quix-state"),
        use_changelog_topics=False,
        loglevel="WARNING",
        auto_create_topics=False,
    )
    topic = app.topic(t.events, key_deserializer="bytes", value_deserializer="bytes")
    app.dataframe(topic).sink(EventLogSink())
    timer = threading.Timer(args.max_seconds, lambda: os.kill(os.getpid(), signal.SIGTERM))
    timer.daemon = True
    timer.start()
    emit(status="ready")
    try:
        app.run()
    finally:
        timer.cancel()
        emit(status="stopped", rows_written=EventLogSink.written)
        ch.close()


if __name__ == "__main__":
    main()
