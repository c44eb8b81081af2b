"""Peer: a quixstreams Application doing the worker's job.

Consume raw bytes -> a BatchingSink whose flush (at each checkpoint: every --commit-every messages
or --commit-interval seconds) runs the whole checkpoint through processors.pipeline.Pipeline.handle,
the worker's own batch step (validation, dead letters delivered before the commit, event-log rows,
reorder buffer, scenario log and enrollment state, the same inserts), then `release_idle`; the changed
contact states are sent to a compacted changelog topic (delivery awaited), as the worker's Faust table
does. Quix commits the checkpoint's offsets after the flush returns, held events
included (a sink cannot commit less than its checkpoint): a crash would lose their derivation, which
the worker does not allow. Same settings and GC policy as the worker; own chdb data dir
(AUTOLOGS_DATA_DIR). Runs until SIGTERM/SIGINT (quix handles them) or --max-seconds; JSON lines on stdout.

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
    from bench.common import ChangelogStates, create_changelog, emit, process_policies, validate_ahead
    from processors.deadletters import dead_letter_headers
    from processors.pipeline import Pipeline
    from processors.validate import RawMessage, Validated
    from streams.topics import ensure_topics, topics
    import asyncio

    settings = get_settings()
    asyncio.run(ensure_topics(settings))
    t = topics(settings)
    ch = ClickHouse(settings)
    migrate(ch)

    process_policies(settings)  # as in the worker
    loop = asyncio.new_event_loop()
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "acks": "all", "enable.idempotence": True})

    async def send_dead_letters(invalid) -> None:
        for m, reason in invalid:
            producer.produce(t.dead_letters, key=m.key, value=m.value or b"", headers=dead_letter_headers(m, reason))
        if producer.flush(30) > 0:
            raise RuntimeError("dead letters not delivered")

    states = ChangelogStates()
    changelog = asyncio.run(create_changelog(settings, args.group))
    pipeline = Pipeline(settings, ch, send_dead_letters, states, commands_topic=t.commands)

    chunk = max(settings.sink_max_rows // 4, 1)

    class PipelineSink(BatchingSink):
        """The checkpoint's messages in arrival order; every `chunk` of them is validated in the validation
        process while quix reads the next ones (the worker and the raw loop validate whole batches ahead)."""

        def __init__(self):
            super().__init__()
            self._arrived: list[RawMessage] = []
            self._checks: list = []  # concurrent futures of Validated, one per chunk submitted
            self._submitted = 0

        def add(self, value, key, timestamp, headers, topic, partition, offset):
            super().add(value, key, timestamp, headers, topic, partition, offset)  # quix's own bookkeeping
            self._arrived.append(RawMessage(topic, partition, offset, key, value, timestamp))
            if getattr(pipeline, "validation", None) is not None and len(self._arrived) - self._submitted >= chunk:
                self._submit()

        def _submit(self):
            self._checks.append(pipeline.validation.submit(self._arrived[self._submitted:]))
            self._submitted = len(self._arrived)

        def write(self, batch):  # unused: flush() hands the whole checkpoint to the pipeline at once
            raise NotImplementedError

        def on_paused(self):
            super().on_paused()
            self._arrived, self._checks, self._submitted = [], [], 0

        def flush(self):
            try:
                msgs, validated = self._arrived, None
                if msgs and getattr(pipeline, "validation", None) is not None:
                    if self._submitted < len(msgs):
                        self._submit()
                    parts = [c.result() for c in self._checks]
                    validated = asyncio.sleep(0, Validated([e for p in parts for e in p.events],
                                                           [i for p in parts for i in p.invalid]))
                if msgs:
                    loop.run_until_complete(pipeline.handle(msgs, validated=validated) if validated is not None
                                            else pipeline.handle(msgs))
                loop.run_until_complete(pipeline.release_idle())
                for key, value in states.changes().items():
                    producer.produce(changelog, key=key, value=value)
                if producer.flush(30) > 0:
                    raise RuntimeError("contact states not delivered")
                if msgs:
                    emit(rows_written=pipeline.event_sink.stats.rows_written, batch=len(msgs),
                         dead_letters=pipeline.stats.dead_letters)
            finally:
                self._batches.clear()
                self._arrived, self._checks, self._submitted = [], [], 0

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
    app.dataframe(topic).sink(PipelineSink())
    timer = threading.Timer(args.max_seconds, lambda: os.kill(os.getpid(), signal.SIGTERM))
    timer.daemon = True
    timer.start()
    emit(status="ready")
    try:
        app.run()
    finally:
        timer.cancel()
        emit(status="stopped", rows_written=pipeline.event_sink.stats.rows_written)
        ch.close()


if __name__ == "__main__":
    main()
