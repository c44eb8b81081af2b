"""Prototype of processors/agents.py (git HEAD version) with the throughput levers, each behind a switch.

Run through bench.experiments.worker (BENCH_AGENTS_MODULE=bench.experiments.agents_fast). Switches
(environment, default = today's behaviour):
  BENCH_ACK=await|sync          await: `await stream.ack(e)` per event (today); sync: the same bookkeeping
                                (event.ack + the two sensor calls) without one coroutine per event
  BENCH_PIPELINE=0|1            1: the insert of batch k runs (in the ClickHouse thread) while batch k+1 is
                                taken and validated; batch k is acked right after its insert, by the task
  BENCH_VALIDATE=each|array     array: TypeAdapter(list[Event]).validate_json on b"[" + b",".join(values) + b"]",
                                per message only when the array fails (then validate_batch as today)
  BENCH_INSERT=rows|columns     columns: column-oriented insert (zip(*rows)) with a reused insert context
  BENCH_BUFFER=N                Faust stream_buffer_maxsize (default: AUTOLOGS_SINK_MAX_ROWS)
  BENCH_DRAIN=fast              faust's fetcher loop without one wait_first per message (streams/faust_patches.py;
                                experiment only, not rebalance-safe)
Ack-after-write is kept in every combination: a batch is acknowledged only once its rows are written.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time

from pydantic import TypeAdapter

from autologs.clickhouse import ClickHouse
from processors.deadletters import dead_letter_headers
from processors.validate import RawMessage, Validated, validate_batch
from schemas.events import Event
from schemas.rows import EVENT_LOG_COLUMNS, Source, event_log_row
from sinks.clickhouse import SinkStats
from streams.app import app, settings
from streams.channels import dead_letters_topic, events_topic

log = logging.getLogger("autologs.bench.agents")

ACK = os.environ.get("BENCH_ACK", "await")
PIPELINE = os.environ.get("BENCH_PIPELINE", "0") == "1"
VALIDATE = os.environ.get("BENCH_VALIDATE", "each")
INSERT = os.environ.get("BENCH_INSERT", "rows")
if os.environ.get("BENCH_BUFFER"):
    app.conf.stream_buffer_maxsize = int(os.environ["BENCH_BUFFER"])

if os.environ.get("BENCH_DRAIN") == "fast":
    from streams import faust_patches as drain_patch

    drain_patch.install()

_LIST = TypeAdapter(list[Event])


async def send_dead_letters(invalid: list[tuple[RawMessage, str]]) -> None:  # as processors.agents
    pending = []
    for msg, reason in invalid:
        pending.append(await dead_letters_topic.send(key=msg.key, value=msg.value or b"",
                                                     headers=dead_letter_headers(msg, reason)))
    await asyncio.gather(*pending)


def crash_loudly(agent: str, exc: BaseException) -> None:  # as processors.agents
    log.critical("agent %s crashed: %r", agent, exc, exc_info=exc)
    logging.shutdown()
    os._exit(70)


class Stats:
    messages = events = dead_letters = 0
    sink = SinkStats()
    t_validate = t_rows = t_ack = t_take = 0.0


_ch: ClickHouse | None = None
_ctx = None


def ch() -> ClickHouse:
    global _ch
    if _ch is None:
        _ch = ClickHouse(settings)
    return _ch


def pipeline_stats() -> dict:
    s = Stats
    return {"messages": s.messages, "events": s.events, "dead_letters": s.dead_letters,
            "rows_written": s.sink.rows_written, "sink_failures": s.sink.failures,
            "sink_last_error": s.sink.last_error, "insert_s": round(s.sink.insert_seconds, 3),
            "validate_s": round(s.t_validate, 3), "rows_s": round(s.t_rows, 3), "ack_s": round(s.t_ack, 3),
            "take_s": round(s.t_take, 3)}


def pipeline():  # /admin/sql reaches the ClickHouse helper through this
    class _P:
        pass
    p = _P()
    p.ch = ch()
    return p


def validate(messages: list[RawMessage]) -> Validated:
    if VALIDATE == "array" and messages and all(m.value for m in messages):
        try:
            evs = _LIST.validate_json(b"[" + b",".join(m.value for m in messages) + b"]")
            return Validated(list(zip(evs, messages)), [])
        except Exception:
            pass  # one bad message: today's path tells which and why
    return validate_batch(messages)


def _insert(rows: list[list]) -> None:
    global _ctx
    c = ch()
    if INSERT == "columns":
        from autologs.clickhouse import _query_lock
        with _query_lock:
            if _ctx is None:
                _ctx = c.client.create_insert_context("event_log", column_names=list(EVENT_LOG_COLUMNS),
                                                      database=c.database, column_oriented=True)
            _ctx.data = [list(col) for col in zip(*rows)]
            c.client.insert(context=_ctx)
    else:
        c.insert("event_log", rows, EVENT_LOG_COLUMNS)


async def write(rows: list[list]) -> None:
    """As sinks.clickhouse.ClickHouseSink.write: retries forever with back-off."""
    if not rows:
        return
    delay = 0.05
    while True:
        t = time.perf_counter()
        try:
            await ch().run(_insert, rows)
        except Exception as exc:
            Stats.sink.failures += 1
            Stats.sink.last_error = f"{type(exc).__name__}: {exc}"[:500]
            await asyncio.sleep(delay)
            delay = min(delay * 2, settings.sink_retry_max_s)
            continue
        Stats.sink.insert_seconds += time.perf_counter() - t
        Stats.sink.inserts += 1
        Stats.sink.rows_written += len(rows)
        return


def _raw(event) -> RawMessage:
    m = event.message
    return RawMessage(m.topic, m.partition, m.offset, m.key, m.value, int(m.timestamp * 1000))


async def ack_all(stream, events) -> None:
    t = time.perf_counter()
    if ACK == "sync":
        on_event_out, on_message_out = stream._on_stream_event_out, stream._on_message_out
        for e in events:
            last = e.ack()
            m = e.message
            on_event_out(m.tp, m.offset, stream, e)
            if last:
                on_message_out(m.tp, m.offset, m)
    else:
        for e in events:
            await stream.ack(e)
    Stats.t_ack += time.perf_counter() - t


@app.agent(events_topic, name="ingest_events")
async def ingest_events(stream):
    within = settings.sink_max_delay_ms / 1000
    pending: asyncio.Task | None = None

    async def write_then_ack(rows, events):
        try:
            await write(rows)
            await ack_all(stream, events)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            crash_loudly("ingest_events", exc)

    t_end = time.perf_counter()
    async for events in stream.noack_take(settings.sink_max_rows, within=within):
        Stats.t_take += time.perf_counter() - t_end
        try:
            t = time.perf_counter()
            msgs = [_raw(e) for e in events]
            checked = validate(msgs)
            t2 = time.perf_counter()
            Stats.t_validate += t2 - t
            if checked.invalid:
                await send_dead_letters(checked.invalid)
            rows = [event_log_row(ev, Source(m.topic, m.partition, m.offset)) for ev, m in checked.events]
            Stats.t_rows += time.perf_counter() - t2
            Stats.messages += len(msgs)
            Stats.events += len(checked.events)
            Stats.dead_letters += len(checked.invalid)
            if PIPELINE:
                if pending is not None:
                    await pending  # at most one insert in flight: memory stays at two batches
                pending = asyncio.ensure_future(write_then_ack(rows, list(events)))
            else:
                await write(rows)
                await ack_all(stream, events)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            crash_loudly("ingest_events", exc)
        t_end = time.perf_counter()
