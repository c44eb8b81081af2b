"""Faust agents. Each takes raw bytes in batches and acks a batch only after it is written."""
from __future__ import annotations

import asyncio
import logging
import os

from autologs.clickhouse import ClickHouse
from processors.deadletters import dead_letter_headers
from processors.pipeline import Pipeline
from processors.validate import RawMessage
from streams.app import app, settings
from streams.channels import dead_letters_topic, events_topic

log = logging.getLogger("autologs.agents")

_pipeline: Pipeline | None = None


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
        _pipeline = Pipeline(settings, ClickHouse(settings), send_dead_letters)
    return _pipeline


def pipeline_stats() -> dict:
    if _pipeline is None:
        return {"messages": 0, "events": 0, "dead_letters": 0, "rows_written": 0, "sink_failures": 0}
    p = _pipeline
    return {"messages": p.stats.messages, "events": p.stats.events, "dead_letters": p.stats.dead_letters,
            "rows_written": p.event_sink.stats.rows_written, "sink_failures": p.event_sink.stats.failures,
            "sink_last_error": p.event_sink.stats.last_error}


def crash_loudly(agent: str, exc: BaseException) -> None:
    """An agent that dies must not leave a worker that looks alive: exit; the unacked batch is re-read."""
    log.critical("agent %s crashed: %r; the worker exits so that it is restarted and resumes from the "
                 "last committed offset", agent, exc, exc_info=exc)
    logging.shutdown()
    os._exit(70)


def _raw(event) -> RawMessage:
    m = event.message
    return RawMessage(m.topic, m.partition, m.offset, m.key, m.value, int(m.timestamp * 1000))


@app.agent(events_topic, name="ingest_events")
async def ingest_events(stream):
    """Validate events, dead-letter the invalid ones, write the event log; then ack."""
    within = settings.sink_max_delay_ms / 1000
    async for events in stream.noack_take(settings.sink_max_rows, within=within):
        try:
            await pipeline().handle([_raw(e) for e in events])
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            crash_loudly("ingest_events", exc)
        for e in events:
            await stream.ack(e)
