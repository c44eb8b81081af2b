"""Stage costs in isolation (µs/event): validation, row building, ClickHouse insert variants; then the
whole batch step in this process, without Kafka or Faust (`pipeline_*`).

python -m bench.stages [--events 20000] [--repeat 3] [--pipeline-events 200000] [--json FILE]
Runs in its own process with its own chdb data dir (a temp dir, removed at the end).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone


def _best(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--pipeline-events", type=int, default=200_000,
                    help="events of the in-process pipeline run (0: skip it)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    tmp = tempfile.mkdtemp(prefix="autologs-bench-stages-")
    os.environ.update(AUTOLOGS_DATA_DIR=tmp, AUTOLOGS_CLICKHOUSE_DATABASE="bench_stages")
    try:
        return _run(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _run(args, tmp: str) -> dict:
    import orjson
    from pydantic import TypeAdapter

    from autologs.clickhouse import ClickHouse
    from autologs.config import get_settings
    from autologs.migrate import migrate
    from processors.validate import RawMessage, validate_batch
    from schemas.events import Event
    from schemas.rows import EVENT_LOG_COLUMNS, Source, event_log_row
    from streams.simulate import SimulationSpec, generate

    n = args.events
    spec = SimulationSpec(contacts=int(n * 0.14) + 2000, max_events=n)
    values = [orjson.dumps(ev) for ev in generate(spec)]
    msgs = [RawMessage("bench.events", i % 4, i, b"k", v, 0) for i, v in enumerate(values)]
    out: dict = {"events": n, "bytes_per_event": sum(map(len, values)) / n}
    us = lambda s: round(s / n * 1e6, 3)  # noqa: E731

    out["validate_batch_us"] = us(_best(lambda: validate_batch(msgs), args.repeat))
    list_adapter = TypeAdapter(list[Event])
    out["validate_json_array_us"] = us(_best(
        lambda: list_adapter.validate_json(b"[" + b",".join(values) + b"]"), args.repeat))
    checked = validate_batch(msgs)
    assert len(checked.events) == n, "the simulate mix is all valid"
    out["event_log_row_us"] = us(_best(
        lambda: [event_log_row(ev, Source(m.topic, m.partition, m.offset)) for ev, m in checked.events],
        args.repeat))
    rows = [event_log_row(ev, Source(m.topic, m.partition, m.offset)) for ev, m in checked.events]
    cols = list(EVENT_LOG_COLUMNS)

    settings = get_settings()
    ch = ClickHouse(settings)
    migrate(ch)
    client, db = ch.client, ch.database

    def truncate():
        ch.command("TRUNCATE TABLE {db}.event_log")

    def timed(fn) -> float:
        best = float("inf")
        for _ in range(args.repeat):
            truncate()
            t = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t)
        return best

    out["insert_rows_us"] = us(timed(lambda: ch.insert("event_log", rows, cols)))
    columns = [list(c) for c in zip(*rows)]
    out["insert_columns_us"] = us(timed(lambda: client.insert(
        "event_log", columns, column_names=cols, database=db, column_oriented=True)))
    ctx = client.create_insert_context("event_log", column_names=cols, database=db)

    def with_ctx():
        ctx.data = rows
        client.insert(context=ctx)
    out["insert_rows_reused_context_us"] = us(timed(with_ctx))

    def ctx_cols():
        ctx.column_oriented = True
        ctx.data = columns
        client.insert(context=ctx)
        ctx.column_oriented = False
    out["insert_columns_reused_context_us"] = us(timed(ctx_cols))

    # JSONEachRow: build bytes from rows (dates as strings), then raw_insert
    def json_bytes(rows):
        buf = []
        dumps = orjson.dumps
        for r in rows:
            d = dict(zip(cols, r))
            d["occurred_at"] = r[4].strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
            buf.append(dumps(d))
        return b"\n".join(buf)
    out["jsoneachrow_build_us"] = us(_best(lambda: json_bytes(rows), args.repeat))
    body = json_bytes(rows)
    out["raw_insert_jsoneachrow_us"] = us(timed(lambda: client.raw_insert(
        f"{db}.event_log", cols, body, fmt="JSONEachRow")))
    # JSONCompactEachRow: arrays instead of objects
    def compact_bytes(rows):
        dumps = orjson.dumps
        parts = []
        for r in rows:
            r = list(r)
            r[4] = r[4].strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
            parts.append(dumps(r))
        return b"\n".join(parts)
    out["jsoncompacteachrow_build_us"] = us(_best(lambda: compact_bytes(rows), args.repeat))
    cbody = compact_bytes(rows)
    out["raw_insert_jsoncompacteachrow_us"] = us(timed(lambda: client.raw_insert(
        f"{db}.event_log", cols, cbody, fmt="JSONCompactEachRow")))
    # chdb direct: the engine's own session, same INFILE path clickhouse-connect uses
    backend = client._backend
    path = os.path.join(tmp, "direct.jsonl")
    with open(path, "wb") as f:
        f.write(cbody)
    out["chdb_direct_infile_jsoncompact_us"] = us(timed(lambda: backend._run(
        f"INSERT INTO `{db}`.event_log ({', '.join(cols)}) FROM INFILE '{path}' FORMAT JSONCompactEachRow",
        "TabSeparated", database=db)))
    cnt = ch.rows("SELECT count() FROM {db}.event_log")[0][0]
    assert cnt == n, cnt
    # pipeline total as it runs today (validate + rows + insert), per event
    out["pipeline_today_us"] = round(out["validate_batch_us"] + out["event_log_row_us"] + out["insert_rows_us"], 3)
    if args.pipeline_events:
        out.update(_pipeline_in_process(ch, settings, args.pipeline_events))
    ch.close()
    print(json.dumps(out, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"date": datetime.now(timezone.utc).isoformat(), **out}, f, indent=2)
    return out


def _pipeline_in_process(ch, settings, n: int) -> dict:
    """Pipeline.start over batches of sink_max_rows, two in flight as in the worker, contact states in a dict,
    real inserts: what one process does when the batch step is all it runs. The worker's figure minus this
    one is the Kafka client's and Faust's share."""
    import asyncio

    import orjson

    from bench.common import process_policies
    from processors.pipeline import DictStates, Pipeline
    from processors.validate import RawMessage
    from streams.simulate import SimulationSpec, generate

    values = [orjson.dumps(ev) for ev in generate(SimulationSpec(contacts=int(n * 0.14) + 2000, max_events=n))]
    messages = [RawMessage("bench.events", i % settings.topic_partitions, i, b"k", v, 0) for i, v in enumerate(values)]
    for table in ("event_log", "scenario_log", "enrollment_state"):
        ch.command(f"TRUNCATE TABLE {{db}}.{table}")
    process_policies(settings)  # as in the worker
    size = settings.sink_max_rows

    async def no_dead_letters(items) -> None:
        raise AssertionError(f"the simulate mix is all valid: {items[:1]}")

    async def run() -> tuple[float, float]:
        pipeline = Pipeline(settings, ch, no_dead_letters, DictStates())
        thread_s, wall_s = time.thread_time(), time.perf_counter()
        finishing = None
        for i in range(0, len(messages), size):
            finish = await pipeline.start(messages[i:i + size])
            if finishing is not None:
                await finishing
            finishing = asyncio.ensure_future(finish)
        if finishing is not None:
            await finishing
        await pipeline.drain()
        return time.thread_time() - thread_s, time.perf_counter() - wall_s

    thread_s, wall_s = asyncio.run(run())
    rows = ch.rows("SELECT count() FROM {db}.event_log FINAL")[0][0]
    assert rows == n, f"{rows} rows for {n} events"
    return {"pipeline_events": n, "pipeline_events_per_s": round(n / wall_s),
            "pipeline_main_thread_us": round(thread_s / n * 1e6, 2), "pipeline_wall_us": round(wall_s / n * 1e6, 2)}


if __name__ == "__main__":
    main(sys.argv[1:])
