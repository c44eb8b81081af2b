"""Replay benchmark: one full `replay.service.replay(...)` over the topics of the ingest run.

    python -m bench.replay_bench --expect N --out FILE
    (env: AUTOLOGS_TOPIC_PREFIX = the ingest run's prefix, AUTOLOGS_DATA_DIR = a fresh dir of its own)

A default replay (shadow tables, day-by-day verification, EXCHANGE, catch-up) into a fresh database that
holds the migrated, empty live tables: what `autologs replay` does without a worker. Rate = messages
read / the whole replay's wall time (verification and swap included), as ReplayReport.events_per_s; the
time of each phase is reported too. Afterwards `count() FROM event_log FINAL` must equal N.
"""
from __future__ import annotations

import argparse
import asyncio
import sys
import time
from dataclasses import asdict

from bench.common import finish_child


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] replay: {msg}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--expect", type=int, required=True, help="events in the topic (count FINAL must match)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)

    from autologs.clickhouse import ClickHouse
    from autologs.config import get_settings
    from autologs.migrate import migrate
    from replay.service import replay

    settings = get_settings()
    ch = ClickHouse(settings, threads=2)  # as `autologs replay` in its own process
    migrate(ch)
    phases: dict[str, float] = {}
    state = {"phase": None, "since": time.monotonic(), "last": 0.0}

    def progress(p) -> None:
        now = time.monotonic()
        if p.phase != state["phase"]:
            if state["phase"] is not None:
                phases[state["phase"]] = round(phases.get(state["phase"], 0) + now - state["since"], 3)
            state["phase"], state["since"] = p.phase, now
        if now - state["last"] >= 2:
            state["last"] = now
            log(f"{p.phase} {p.read:,}/{p.total:,} ({p.rate:,.0f} events/s)")

    t0 = time.monotonic()
    run, report = asyncio.run(replay(settings, ch, None, None, None, False, False, progress))
    wall = time.monotonic() - t0
    count = ch.rows("SELECT count() FROM {db}.event_log FINAL")[0][0]
    scenario = ch.rows("SELECT count() FROM {db}.scenario_log FINAL")[0][0]
    out = {**asdict(report), "events_per_s": round(report.events_per_s, 1), "wall_s": round(wall, 3),
           "phases_s": phases, "count_final": count, "scenario_log_rows": scenario, "ok": count == args.expect,
           "contacts_states": len(run.states)}
    log(f"{report.messages_read:,} messages in {report.seconds:.1f}s = {report.events_per_s:,.0f} events/s "
        f"(phases {phases}); count FINAL = {count:,} ({'ok' if count == args.expect else 'MISMATCH'})")
    return finish_child(args.out, out, ch)


if __name__ == "__main__":
    main()
