"""Freshness: from produce time to queryable in the event log, under a steady load below the maximum.

Run by bench.run (`--only freshness`), in the benchmark's own process except the worker:
1. A fresh `autologs worker` (own topic prefix `<run prefix>f`, own chdb dir, own web port) is started;
   `warmup` events are produced at once and awaited (group joined, partitions assigned, code warm).
2. `rate * duration` events of the simulate mix are produced at `rate` events/s (a paced producer: every
   10 ms it sends what is due), each with `properties.sent_ms` = the wall clock (ms) just before its send.
3. Once the worker wrote them all it is stopped, and in a fresh process (`autologs sql`):
   latency of an event = min(ingested_at) of its rows (the DEFAULT now64(3) of the INSERT that made it
   queryable) - sent_ms; p50 / p99 / max over every paced event, computed by ClickHouse. Both clocks
   are this machine's wall clock.
"""
from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections import deque
from itertools import islice
from pathlib import Path

from bench.common import Proc, bench_env, free_port, log

QUERY = (
    "SELECT count() AS n, quantileExact(0.5)(lat) AS p50_ms, quantileExact(0.99)(lat) AS p99_ms, "
    "max(lat) AS max_ms, round(avg(lat), 1) AS mean_ms, min(lat) AS min_ms FROM ("
    "SELECT event_id, min(toUnixTimestamp64Milli(ingested_at)) - any(JSONExtractInt(properties, 'sent_ms')) AS lat "
    "FROM {db}.event_log WHERE JSONHas(properties, 'sent_ms') GROUP BY event_id)"
)
# The inserts that made them queryable: how many, how big, how far apart (a diagnosis of the latency).
BATCHES = (
    "SELECT count() AS inserts, round(avg(n), 1) AS rows_per_insert, max(n) AS max_rows_per_insert, "
    "round((toUnixTimestamp64Milli(max(t)) - toUnixTimestamp64Milli(min(t))) / greatest(count() - 1, 1)) "
    "AS ms_between_inserts FROM (SELECT ingested_at AS t, count() AS n FROM {db}.event_log "
    "WHERE JSONHas(properties, 'sent_ms') GROUP BY t)"
)


SENT_MS_PLACEHOLDER = 1_000_000_000_000  # 13 digits, as every wall clock in ms until 2286: patched in place at send


async def _produce(settings, events: list[dict], rate: float | None, mark: bool) -> dict:
    """Send `events` at `rate`/s (None: at once); with `mark`, stamp properties.sent_ms at send time.

    Each event's bytes, key and partition (the producer's default partitioner's) are made before the first
    send: paced on the worker's 2 cores, the producer's own Python work per event (a dict copy, the JSON, the
    partitioner's murmur2) made it fall behind its schedule at ~24k/s and then send in bursts, which the
    freshness then measured (2026-11-28 05:13: up to 2.1 s behind, seconds of 38k-46k events)."""
    import orjson
    from aiokafka.partitioner import DefaultPartitioner

    from schemas.events import partition_key
    from streams.produce import new_producer
    from streams.topics import topics

    topic = topics(settings).events
    producer = new_producer(settings)
    await producer.start()
    placeholder = b'"sent_ms":%d' % SENT_MS_PLACEHOLDER
    try:
        partitions = sorted(await producer.partitions_for(topic))
        choose = DefaultPartitioner()
        prepared = []
        for ev in events:
            if mark:
                ev = {**ev, "properties": {**(ev.get("properties") or {}), "sent_ms": SENT_MS_PLACEHOLDER}}
            key = partition_key(ev["account_id"], ev.get("email"), ev.get("contact_id"))
            prepared.append((orjson.dumps(ev), key, choose(key, partitions, partitions)))
        pending: deque[asyncio.Future] = deque()
        began = time.monotonic()
        late = 0.0
        i = 0
        while i < len(prepared):
            due = len(prepared) if rate is None else min(len(prepared), int((time.monotonic() - began) * rate) + 1)
            late = max(late, (due - i) / rate if rate else 0.0)
            while i < due:
                value, key, partition = prepared[i]
                if mark:
                    value = value.replace(placeholder, b'"sent_ms":%d' % int(time.time() * 1000), 1)
                pending.append(await producer.send(topic, value, key=key, partition=partition))
                i += 1
            while pending and pending[0].done():
                pending.popleft().result()  # raises a delivery error
            if rate is not None:
                await asyncio.sleep(0.01)
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    took = time.monotonic() - began
    return {"events": len(events), "seconds": round(took, 3), "rate": round(len(events) / max(took, 1e-6), 1),
            "max_behind_schedule_s": round(late, 3)}


def _wait_rows(p: Proc, want: int, timeout: float) -> float:
    began = time.monotonic()
    while p.rows_written() < want:
        if not p.alive():
            raise RuntimeError(f"freshness worker exited:\n{p.log_tail()}")
        if time.monotonic() - began > timeout:
            raise RuntimeError(f"freshness worker wrote {p.rows_written():,} of {want:,} rows in {timeout:.0f}s")
        time.sleep(0.1)
    return time.monotonic() - began


# The seconds of the run (from the first paced send) whose events waited longest: stalls show up here.
WORST = (
    "SELECT groupArray((second, n, p50, mx)) AS worst FROM (SELECT second, count() AS n, "
    "toUInt32(quantileExact(0.5)(lat)) AS p50, toUInt32(max(lat)) AS mx FROM (SELECT intDiv(sent - "
    "(SELECT min(JSONExtractInt(properties, 'sent_ms')) FROM {db}.event_log WHERE JSONHas(properties, 'sent_ms')), "
    "1000) AS second, lat FROM (SELECT any(JSONExtractInt(properties, 'sent_ms')) AS sent, "
    "min(toUnixTimestamp64Milli(ingested_at)) - sent AS lat FROM {db}.event_log "
    "WHERE JSONHas(properties, 'sent_ms') GROUP BY event_id)) GROUP BY second ORDER BY mx DESC LIMIT 5)"
)


def _sql(env: dict[str, str], query: str) -> dict:
    """One row of `autologs sql` in a fresh process (the worker is stopped: the data dir is free)."""
    out = subprocess.run([sys.executable, "-m", "autologs.cli", "sql", "--format", "json", query], env=env,
                         capture_output=True, timeout=300)
    if out.returncode != 0:
        raise RuntimeError(f"freshness query failed: {out.stderr.decode()[-2000:]}")
    row = json.loads(out.stdout.splitlines()[-1])
    return {k: v if isinstance(v, list) else float(v) for k, v in row.items()}


def _wait_health(port: int, ok, timeout: float) -> bool:
    import urllib.request

    began = time.monotonic()
    while time.monotonic() - began < timeout:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if ok(json.loads(r.read())):
                    return True
        except Exception:
            pass
        time.sleep(0.2)
    return False


def run_freshness(tmp: Path, prefix: str, rate: float, duration: float, extra_env: dict[str, str],
                  warmup: int = 500) -> dict:
    from autologs.config import Settings
    from streams.simulate import SimulationSpec, generate

    fprefix = f"{prefix}f"  # under the run's prefix: its topics are deleted with the others
    port, d = free_port(), tmp / "freshness"
    env = bench_env(d, fprefix, port, **extra_env)
    n = max(int(rate * duration), 1)
    spec = SimulationSpec(seed=43, contacts=max(2000, int((n + warmup) * 0.14)), max_events=n + warmup)
    events = list(islice(generate(spec), n + warmup))
    settings = Settings(topic_prefix=fprefix, data_dir=d, kafka_bootstrap=env.get("AUTOLOGS_KAFKA_BOOTSTRAP",
                                                                                 "127.0.0.1:9092"))
    p = Proc("freshness-worker", [sys.executable, "-m", "autologs.cli", "worker"], env, d, f"{fprefix}-worker", port)
    log(f"freshness: worker on {fprefix}, then {n:,} events at {rate:,.0f}/s for {duration:.0f}s")
    p.start()
    try:
        if not _wait_health(port, lambda h: True, 180):  # /health answers once the worker runs
            raise RuntimeError(f"freshness worker not up in 180 s:\n{p.log_tail()}")
        asyncio.run(_produce(settings, events[:warmup], None, mark=False))
        warm_s = _wait_rows(p, warmup, 180)
        log(f"freshness: warm-up of {warmup} events written {warm_s:.1f}s after their send; paced run starts")
        produced = asyncio.run(_produce(settings, events[warmup:], rate, mark=True))
        drain_s = _wait_rows(p, warmup + n, 300)
        # Let the reorder buffer release what it holds (idle release) so that everything is acknowledged:
        # a Faust worker stopped with unacknowledged messages waits for them (stream_wait_empty) until killed.
        _wait_health(port, lambda h: h.get("held", 0) == 0, 60)
        log(f"freshness: {produced['events']:,} events sent in {produced['seconds']:.1f}s "
            f"({produced['rate']:,.0f}/s); all written {drain_s:.1f}s after the last send")
    finally:
        t0 = time.monotonic()
        p.stop()
        stop_s = time.monotonic() - t0
        if stop_s > 15:
            log(f"freshness: the worker took {stop_s:.0f}s to stop; its log ends with:\n{p.log_tail(1500)}")
    stats = _sql(env, QUERY)
    try:
        batches = _sql(env, BATCHES)
        batches["worst_seconds"] = [dict(zip(("second", "events", "p50_ms", "max_ms"), w))
                                    for w in _sql(env, WORST)["worst"]]
    except (RuntimeError, ValueError, KeyError) as exc:
        batches = {"error": str(exc)[-500:]}
    if int(stats["n"]) != n:
        raise RuntimeError(f"freshness: {int(stats['n'])} stamped events in the event log, expected {n}")
    result = {"target_rate": round(rate, 1), "duration_s": duration, "warmup_events": warmup,
              "produced": produced, "drain_after_last_send_s": round(drain_s, 2), **stats, "inserts": batches,
              "p50_s": round(stats["p50_ms"] / 1000, 3), "p99_s": round(stats["p99_ms"] / 1000, 3)}
    log(f"freshness: p50 {result['p50_s']}s, p99 {result['p99_s']}s, max {stats['max_ms'] / 1000:.3f}s over "
        f"{n:,} events")
    return result
