"""Faust agents and timers. Messages are acknowledged only once everything derived from them is written."""
from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from typing import AsyncIterator

from aiokafka import TopicPartition

from autologs import gcpolicy
from autologs.clickhouse import ClickHouse
from processors.deadletters import dead_letter_headers
from processors.pipeline import Pipeline
from processors.validate import RawMessage
from streams.app import app, settings
from streams.channels import dead_letters_topic, sources_topic
from streams.faust_patches import ack_many, deliver_in_batches
from streams.inbox import BatchInbox, InOrderAcks
from streams.tables import TableStates, enrollments
from streams.topics import topics

log = logging.getLogger("autologs.agents")

_pipeline: Pipeline | None = None
_inbox: BatchInbox | None = None  # filled by the consumer loop once the agent has started
_in_order = InOrderAcks()  # what the agent took, acknowledged in each partition's offset order
_events_topic = topics(settings).events


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
        _pipeline = Pipeline(settings, ClickHouse(settings), send_dead_letters, TableStates(enrollments),
                             commands_topic=topics(settings).commands)
    return _pipeline


def pipeline_stats() -> dict:
    """The worker's figures for /health; `status` is "failing" while an insert is being retried or while the
    broker does not accept connections."""
    p = pipeline()
    sinks = (p.event_sink, p.scenario_sink, p.enrollment_sink)
    failing = [s for s in sinks if s.stats.failing_since]
    status = "ok"
    if _kafka_unreachable_since:
        status = (f"failing: Kafka at {settings.kafka_bootstrap} has not accepted connections for "
                  f"{time.monotonic() - _kafka_unreachable_since:.0f} s; the worker resumes by itself once it is "
                  "back (the project's broker: `autologs broker start`)")
    elif failing:
        since = min(s.stats.failing_since for s in failing)
        status = (f"failing: inserts into {', '.join(s.table for s in failing)} have failed for "
                  f"{time.monotonic() - since:.0f} s and are retried (consumption waits): {failing[0].stats.last_error}")
    return {"status": status, **p.stats.__dict__, "held": len(p.held), "rows_written": p.event_sink.stats.rows_written,
            "sink_failures": sum(s.stats.failures for s in sinks),
            "sink_last_error": next((s.stats.last_error for s in sinks if s.stats.last_error), ""),
            "validation_processes": settings.validation_processes,
            "validation_restarts": p.validation.restarts if p.validation else 0,
            "validation_given_up": bool(p.validation and p.validation.given_up), "gc": gcpolicy.stats.__dict__}


def crash_loudly(agent: str, exc: BaseException) -> None:
    """An agent that dies must not leave a worker that looks alive: exit; the unacked batch is re-read."""
    log.critical("agent %s crashed: %r; the worker exits so that it is restarted and resumes from the "
                 "last committed offset", agent, exc, exc_info=exc)
    logging.shutdown()
    os._exit(70)


async def _ack(messages) -> None:
    """The offsets become committable (Faust commits acknowledged offsets only), each partition's in offset
    order: a message waits for those before it (`InOrderAcks`).

    Faust's per-message sensors (message in/out) are not called: the worker's figures are on /health.
    """
    if messages:
        ready = _in_order.finished(messages)
        if ready:
            ack_many(app.consumer, ready)


def _start_batches(stream) -> BatchInbox:
    global _inbox
    _inbox = BatchInbox(maxsize=settings.sink_max_rows * settings.inbox_batches, batch_rows=settings.sink_max_rows)
    deliver_in_batches(app, stream.channel, _inbox)
    return _inbox


def _live(messages: list) -> list:
    """Those fetched in the consumer's current generation, while its flow is active (not stale after a rebalance)."""
    generation, active = app.consumer_generation_id, app.flow_control.is_active()
    return [m for m in messages if active and m.generation_id == generation] if active else []


async def take_batches(inbox: BatchInbox, within: float) -> AsyncIterator[tuple[list, float]]:
    """Batches of fetched messages, not acknowledged yet (see `ack_many`), each with when its newest message
    was fetched (`BatchInbox.taken_fetched_at`).

    Messages fetched before a rebalance (another generation, or while the flow is suspended) are
    dropped, not acknowledged: after the rebalance the consumer seeks to the committed offsets, so the
    partitions' owners read them again. (Faust's streams acknowledge them, which could let a commit pass
    a message before its re-read copy is processed.)
    """
    while True:
        batch = await inbox.take(within)
        live = _live(batch)
        if live:
            _in_order.delivered(live)
            yield live, inbox.taken_fetched_at


async def validated_ahead(inbox: BatchInbox, within: float) -> AsyncIterator[tuple[list, object, float]]:
    """Batches, each with its validation already started (`Pipeline.validate_ahead`): the next batch is validated
    in the validation process while this one is derived. At most three batches wait here, validated or being so.

    A batch taken before a rebalance is filtered again when its turn comes (see `take_batches`); what is left
    of it, if anything, is validated then, here.
    """
    ready: asyncio.Queue = asyncio.Queue(maxsize=2)

    async def take_and_validate() -> None:
        async for messages, fetched_at in take_batches(inbox, within):
            await ready.put((messages, app.consumer_generation_id, pipeline().validate_ahead(messages), fetched_at))

    taking = asyncio.ensure_future(take_and_validate())
    try:
        while True:
            next_batch = asyncio.ensure_future(ready.get())
            await asyncio.wait((next_batch, taking), return_when=asyncio.FIRST_COMPLETED)
            if not next_batch.done():
                next_batch.cancel()
                taking.result()  # take_batches ended: raise what ended it
                return
            messages, generation, validated, fetched_at = next_batch.result()
            if generation != app.consumer_generation_id or not app.flow_control.is_active():
                live = _live(messages)
                if validated is not None:
                    validated.cancel()
                messages, validated = live, None
            if messages:
                yield messages, validated, fetched_at
    finally:
        taking.cancel()


@app.agent(sources_topic, name="ingest_events")
async def ingest_events(stream):
    """Validate events, dead-letter the invalid ones, write the logs and the state; then ack.

    Reads batches from the consumer loop directly (streams/faust_patches.py), not event by event
    from `stream`, which is here for the agent's place in the app (start, crash, stop).
    """
    finishing: asyncio.Task | None = None
    try:
        inbox = _start_batches(stream)
        async for messages, validated, fetched_at in validated_ahead(inbox, settings.sink_max_delay_ms / 1000):
            # This batch is derived while the one before is still being written, and the next one validated.
            # (InboxMessage: read and acked as is.)
            finish = await pipeline().start(messages, validated=validated, fetched_at=fetched_at)
            if finishing is not None:
                await finishing
            finishing = asyncio.ensure_future(_finish_and_ack(finish))
    except asyncio.CancelledError:
        if finishing is not None:
            finishing.cancel()
        raise
    except Exception as exc:
        crash_loudly("ingest_events", exc)


async def _finish_and_ack(finish) -> None:
    try:
        await _ack(await finish)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        crash_loudly("ingest_events", exc)


_kafka_unreachable_since = 0.0  # time.monotonic() since the broker refuses connections; 0: it accepts them


def _accepts_connections(bootstrap: str, timeout: float = 2.0) -> bool:
    for server in bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            socket.create_connection((host, int(port)), timeout=timeout).close()
            return True
        except OSError:
            continue
    return False


@app.timer(interval=5.0)
async def watch_kafka():
    """/health says so while no bootstrap server accepts a connection (the consumer retries on its own)."""
    global _kafka_unreachable_since
    if await asyncio.to_thread(_accepts_connections, settings.kafka_bootstrap):
        _kafka_unreachable_since = 0.0
    elif not _kafka_unreachable_since:
        _kafka_unreachable_since = time.monotonic()


ANSWER_GAP_MS = 1000  # no answer to a partition's fetches for this long (they come every ~100 ms): a stall
_answered_since: dict[int, float] = {}  # per events partition: wall ms of the first answer since the last stall


def _assignment():
    """aiokafka's assignment, in Faust's consumer thread (read only here), or None."""
    try:
        return app.consumer._thread._ensure_consumer()._subscription.subscription.assignment
    except Exception:  # not started, or between assignments
        return None


def _fetch_state(partition: int):
    assignment = _assignment()
    return assignment.state_value(TopicPartition(_events_topic, partition)) if assignment is not None else None


def watch_fetch_answers() -> None:
    """Note, per events partition, since when the broker has answered its fetches without a stall."""
    assignment = _assignment()
    try:
        assigned = [tp.partition for tp in (assignment.tps if assignment is not None else ())
                    if tp.topic == _events_topic]
    except RuntimeError:  # changed by the consumer thread meanwhile (a rebalance): next time
        return
    for p in set(_answered_since) - set(assigned):
        del _answered_since[p]
    now_ms = time.time() * 1000
    for p in assigned:
        state = _fetch_state(p)
        polled = getattr(state, "timestamp", None)
        if polled is None or now_ms - polled > ANSWER_GAP_MS:
            _answered_since.pop(p, None)
        else:
            _answered_since.setdefault(p, polled)


def caught_up(partition: int, quiet_for_s: float) -> bool:
    """A partition is quiet, not stalled, when the broker answered its fetches after it had been quiet for the
    idle time (so it saw nothing more then), has answered without a stall for the idle time (producers cut off
    by an outage get that long to send what they kept), the consumer has everything up to its end, and the agent
    has taken in everything fetched of it (its quiet counts from its last fetch: `ReorderBuffer.add_many`). What
    it holds would otherwise be derived before the events that follow it, which may come earlier in event time."""
    fetched = _inbox.last_offset(TopicPartition(_events_topic, partition)) if _inbox is not None else None
    if fetched is not None and pipeline().read_to.get(partition, -1) < fetched:
        return False  # fetched, still waiting for the agent (a backlog is not a quiet stream)
    state = _fetch_state(partition)
    if state is None or state.timestamp is None or state.highwater is None or not state.has_valid_position:
        return True  # not reading it (yet): nothing to wait for
    now_ms, idle_ms = time.time() * 1000, settings.scenario_idle_release_s * 1000
    since = _answered_since.get(partition)
    return (since is not None and now_ms - since >= idle_ms and now_ms - state.timestamp <= quiet_for_s * 1000 - idle_ms
            and state.position >= state.highwater)


@app.timer(interval=0.5)
async def release_idle_partitions():
    """Quiet partitions hand over what they hold, so the end of a stream is derived too."""
    if _inbox is None:
        return
    try:
        watch_fetch_answers()
        done = await pipeline().release_idle(caught_up)
    except Exception as exc:
        crash_loudly("release_idle_partitions", exc)
    await _ack(done)
    if done:
        # The stream went quiet and its last events are written: commit now rather than at the next interval,
        # so that a restart re-reads nothing of it.
        await app.consumer.commit()


@app.on_partitions_revoked.connect
async def forget_held_events(app, revoked, **kwargs) -> None:
    """Held events of revoked partitions are unacknowledged: their new owner reads them again."""
    if _pipeline is not None:
        dropped = _pipeline.forget_partitions({tp.partition for tp in revoked})
        if dropped:
            log.info("dropped %d held events of revoked partitions", dropped)
    _in_order.forget(revoked)
