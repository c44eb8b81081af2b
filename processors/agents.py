"""Faust agents and timers. Messages are acknowledged only once everything derived from them is written."""
from __future__ import annotations

import asyncio
import logging
import os

from autologs.clickhouse import ClickHouse
from processors.deadletters import dead_letter_headers
from processors.pipeline import Pipeline
from processors.validate import RawMessage
from streams.app import app, settings
from streams.channels import dead_letters_topic, sources_topic
from streams.tables import enrollments
from streams.topics import topics

log = logging.getLogger("autologs.agents")

_pipeline: Pipeline | None = None
_stream = None  # the agent's stream: acknowledgements go through it


async def send_dead_letters(invalid: list[tuple[RawMessage, str]]) -> None:
    """Publish and wait for delivery: the source offsets are acked only once the letters are safe."""
    pending = []
    for msg, reason in invalid:
        pending.append(await dead_letters_topic.send(key=msg.key, value=msg.value or b"",
                                                     headers=dead_letter_headers(msg, reason)))
    await asyncio.gather(*pending)


def pipeline() -> Pipeline:
    global _pipeline
    if _pipeline is None:
        _pipeline = Pipeline(settings, ClickHouse(settings), send_dead_letters, enrollments,
                             commands_topic=topics(settings).commands)
    return _pipeline


def pipeline_stats() -> dict:
    p = pipeline()
    return {**p.stats.__dict__, "held": len(p.held), "rows_written": p.event_sink.stats.rows_written,
            "sink_failures": sum(s.stats.failures for s in (p.event_sink, p.scenario_sink, p.enrollment_sink)),
            "sink_last_error": p.event_sink.stats.last_error or p.scenario_sink.stats.last_error}


def crash_loudly(agent: str, exc: BaseException) -> None:
    """An agent that dies must not leave a worker that looks alive: exit; the unacked batch is re-read."""
    log.critical("agent %s crashed: %r; the worker exits so that it is restarted and resumes from the "
                 "last committed offset", agent, exc, exc_info=exc)
    logging.shutdown()
    os._exit(70)


def _raw(event) -> RawMessage:
    m = event.message
    return RawMessage(m.topic, m.partition, m.offset, m.key, m.value, int(m.timestamp * 1000),
                      tuple(m.headers or ()))


async def _ack(events) -> None:
    """Stream.ack's bookkeeping without a coroutine per event (measured: +9% throughput)."""
    on_event_out, on_message_out = _stream._on_stream_event_out, _stream._on_message_out
    for e in events:
        last = e.ack()
        m = e.message
        on_event_out(m.tp, m.offset, _stream, e)
        if last:
            on_message_out(m.tp, m.offset, m)


@app.agent(sources_topic, name="ingest_events")
async def ingest_events(stream):
    """Validate events, dead-letter the invalid ones, write the logs and the state; then ack."""
    global _stream
    _stream = stream
    within = settings.sink_max_delay_ms / 1000
    async for events in stream.noack_take(settings.sink_max_rows, within=within):
        try:
            done = await pipeline().handle([(_raw(e), e) for e in events])
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            crash_loudly("ingest_events", exc)
        await _ack(done)


@app.timer(interval=0.5)
async def release_idle_partitions():
    """Quiet partitions hand over what they hold, so the end of a stream is derived too."""
    if _stream is None:
        return
    try:
        done = await pipeline().release_idle()
    except Exception as exc:
        crash_loudly("release_idle_partitions", exc)
    await _ack(done)


@app.on_partitions_revoked.connect
async def forget_held_events(app, revoked, **kwargs) -> None:
    """Held events of revoked partitions are unacknowledged: their new owner reads them again."""
    if _pipeline is not None:
        dropped = _pipeline.held.drop_partitions({tp.partition for tp in revoked})
        if dropped:
            log.info("dropped %d held events of revoked partitions", dropped)
