"""Summarise a py-spy raw (collapsed) profile of the worker: share of samples per pipeline stage.

python -m bench.profile_summary bench/results/profile_faust_worker.txt [--events N --seconds S]
With N and S (events processed and seconds recorded) each stage is also given in µs/event.
Categories are matched on the whole stack, first match wins (see STAGES).
Each thread's share of all samples is printed too: for a profile recorded with `py-spy --gil`
(`bench.run --profile gil`), which samples only the thread holding the GIL, that is its share of the GIL.
"""
from __future__ import annotations

import argparse
import collections
import json
import re

STAGES = [  # (stage, substrings of a frame; any match)
    ("chdb insert (engine, in the ClickHouse thread)", ("execute_data_insert", "_run (clickhouse_connect/driver/_backend/chdb_backend")),
    ("clickhouse-connect serialization (Native blocks)", ("build_insert", "write_column", "_write_column", "insert (clickhouse_connect", "create_insert_context", "data_insert")),
    ("pydantic validation (validate_json + field validators)", ("validate_json", "validate_batch", "schemas/events.py", "ipaddress.py")),
    ("event_log_row", ("event_log_row",)),
    ("scenario log / reorder buffer / enrollment table (7429f93+)", ("processors/reorder.py", "processors/scenarios.py", "streams/tables.py", "faust/tables", "scenario")),
    ("acks (stream.ack per event)", ("ack (faust/streams.py", "ack (faust/transport/consumer.py", "ack (faust/types/tuples.py", "ack (faust/events.py", "_ack (", "ack_all")),
    ("noack_take buffer processor (per event)", ("add_to_buffer",)),
    ("Faust stream iteration (per event: __aiter__, processors, sensors)", ("__aiter__ (faust/streams.py", "_py_aiter", "on_stream_event_in", "on_message_in", "_c_aiter")),
    ("Faust fetcher loop (Consumer._drain_messages: wait_first/getmany per fetch)", ("_drain_messages",)),
    ("Faust conductor / consumer callback (per message -> channel queue)", ("on_message (faust/transport/conductor", "conductor.py", "channels.py", "faust/transport/consumer.py", "put (faust", "deliver")),
    ("changelog and dead letters produced (aiokafka producer, socket writes)", ("aiokafka/producer", "Sender._send_produce_req", "ProducerBuffer")),
    ("aiokafka fetch + record decoding", ("aiokafka/consumer/fetcher", "aiokafka/record", "aiokafka/conn", "getmany")),
    ("commit", ("commit",)),
    ("the batch step's own lines (lists, grouping, sorting, freeing the batch)", ("processors/pipeline.py", "processors/agents.py")),
    ("asyncio scheduling overhead", ("asyncio/",)),
]


def summarise(path: str, events: int | None, seconds: float | None, rate: float = 250.0) -> dict:
    per_thread: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    leaf_funcs: collections.Counter = collections.Counter()
    total = 0
    for line in open(path, errors="replace"):
        line = line.rstrip("\n")
        if not line:
            continue
        stack, _, n = line.rpartition(" ")
        try:
            n = int(n)
        except ValueError:
            continue
        frames = stack.split(";")
        thread = frames[0] if frames and frames[0].startswith(("thread", "process")) else "?"
        if frames and frames[0].startswith("process"):
            thread = frames[1] if len(frames) > 1 and frames[1].startswith("thread") else thread
        first = thread if thread != "?" else (frames[0] if frames else "")  # `--subprocesses`: the thread frame
        name = ("event loop thread (MainThread)" if "MainThread" in first else
                "validation I/O thread (unpickling the validation process's answers)"
                if "autologs-validation" in first or any("ValidationProcess" in f for f in frames) else
                "ClickHouse threads (one lane per table)"
                if ("clickhouse" in first or any("concurrent/futures/thread.py" in f for f in frames))
                else first.split(": ", 1)[-1] or "other thread")
        stage = "other"
        leaf_frame = frames[-1] if frames else ""
        if any(k in leaf_frame for k in ("select (selectors.py", "EpollSelector.select", "poll (selectors")):
            stage = "idle (waiting in select/epoll)"
        for st, keys in ([] if stage != "other" else STAGES):
            if any(k in stack for k in keys):
                stage = st
                break
        per_thread[name][stage] += n
        leaf = re.sub(r":\d+\)$", ")", frames[-1]) if frames else "?"
        leaf_funcs[(name, leaf)] += n
        total += n
    out: dict = {"samples": total, "threads": {}}
    for t, c in per_thread.items():
        tt = sum(c.values())
        rows = []
        for st, k in c.most_common():
            row = {"stage": st, "samples": k, "share_of_thread": round(k / tt, 4)}
            if events:
                # samples -> seconds of that thread's time: one sample every 1/rate s (py-spy --rate)
                row["us_per_event"] = round(k / rate / events * 1e6, 2)
            rows.append(row)
        out["threads"][t] = {"samples": tt, "share_of_samples": round(tt / total, 4), "stages": rows}
    out["top_leaf_functions"] = [{"thread": t, "function": f, "samples": k}
                                 for (t, f), k in leaf_funcs.most_common(25)]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("path")
    ap.add_argument("--events", type=int)
    ap.add_argument("--seconds", type=float)
    ap.add_argument("--rate", type=float, default=250.0, help="py-spy sampling rate used (bench.run: 250)")
    ap.add_argument("--json")
    a = ap.parse_args()
    s = summarise(a.path, a.events, a.seconds, a.rate)
    for t, d in s["threads"].items():
        busy = f", {d['samples'] / a.rate / a.events * 1e6:.1f} µs/event" if a.events else ""
        print(f"\n{t}: {d['samples']} samples ({d['share_of_samples']:.1%} of all){busy}")
        for r in d["stages"]:
            us = f"{r['us_per_event']:8.2f} µs/event" if "us_per_event" in r else ""
            print(f"  {r['share_of_thread'] * 100:5.1f}%  {us}  {r['stage']}")
    print("\ntop leaf functions:")
    for r in s["top_leaf_functions"][:15]:
        print(f"  {r['samples']:6d}  {r['thread'][:18]:18}  {r['function'][:110]}")
    if a.json:
        json.dump(s, open(a.json, "w"), indent=2)


if __name__ == "__main__":
    main()
