"""CPU the embedded engine spends per event on the worker's inserts, table by table, and with insert settings.

    python -m bench.experiments.engine_cost [--events 200000] [--settings 'name=value,...'] [--settle 20]

The worker's process used ~15 CPU-µs per event in native threads (the table's run of `make bench`): chdb
parsing, sorting, compressing and merging the batches of six tables. This captures the inserts the batch
step makes for the simulate mix (the Pipeline with its sinks recording instead of writing), then replays
them into a fresh migrated database in this process, and reports the process's CPU time (every thread:
the engine's inserts, its views and its background merges) per event, for each table's inserts alone and
for all of them, the merges they started included (counted until `--settle` seconds after the last insert).
CPU time, not wall time: the figure does not move much with the load of the machine's other core.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import tempfile
import time


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)  # every thread of the process, the engine's included
    return r.ru_utime + r.ru_stime


def _capture(n: int) -> list[tuple[str, list, list]]:
    """(table, columns, rows) of every insert the batch step makes for n simulate events, in order."""
    from autologs.config import get_settings
    from processors.pipeline import DictStates, Pipeline
    from processors.validate import RawMessage
    from sinks.clickhouse import ClickHouseSink
    from streams.simulate import SimulationSpec, generate

    import orjson

    values = [orjson.dumps(ev) for ev in generate(SimulationSpec(contacts=int(n * 0.14) + 2000, max_events=n))]
    messages = [RawMessage("events", i % 4, i, b"k", v, 0) for i, v in enumerate(values)]
    captured: list[tuple[str, list, list]] = []

    async def record(self, rows) -> None:
        if rows:
            captured.append((self.table, list(self.columns), rows))

    async def no_dead_letters(items) -> None:
        raise AssertionError(items[:1])

    ClickHouseSink.write = record  # type: ignore[method-assign]

    async def run() -> None:
        pipeline = Pipeline(get_settings(), None, no_dead_letters, DictStates())  # type: ignore[arg-type]
        for i in range(0, n, 20_000):
            await (await pipeline.start(messages[i:i + 20_000]))
        await pipeline.drain()

    asyncio.run(run())
    return captured


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--settings", default="", help="extra insert settings, e.g. optimize_on_insert=0")
    ap.add_argument("--settle", type=float, default=20.0, help="seconds counted after the last insert (merges)")
    ap.add_argument("--only", default="", help="comma-separated tables to insert (default: all)")
    ap.add_argument("--drop-views", action="store_true", help="without the copies' materialized views")
    ap.add_argument("--table-settings", default="",
                    help="MergeTree settings of every table, e.g. merge_selector_base=8 (ALTER TABLE ... MODIFY SETTING)")
    ap.add_argument("--stop-merges", action="store_true", help="no merges at all (their share of the cost)")
    args = ap.parse_args(argv)
    data = tempfile.mkdtemp(prefix="autologs-engine-cost-")
    os.environ["AUTOLOGS_DATA_DIR"] = data
    try:
        from autologs import clickhouse as chmod
        from autologs import migrate
        from autologs.clickhouse import ClickHouse
        from autologs.config import get_settings

        print(f"capturing the inserts of {args.events:,} simulate events...", flush=True)
        captured = _capture(args.events)
        extra = dict(kv.split("=", 1) for kv in args.settings.split(",") if kv)
        chmod._JSON_INSERT_SETTINGS.update(extra)
        ch = ClickHouse(get_settings(), database="engine_cost")
        migrate.migrate(ch)
        if args.drop_views:
            for (view,) in ch.rows("SELECT name FROM system.tables WHERE database = {d:String} AND "
                                   "engine = 'MaterializedView'", {"d": ch.database}):
                ch.command(f"DROP TABLE {{db}}.`{view}`")
        tables = [name for (name,) in ch.rows("SELECT name FROM system.tables WHERE database = {d:String} AND "
                                              "engine LIKE '%MergeTree'", {"d": ch.database})]
        if args.table_settings:
            for name in tables:
                ch.command(f"ALTER TABLE {{db}}.`{name}` MODIFY SETTING {args.table_settings}")
        if args.stop_merges:
            for name in tables:
                ch.command(f"SYSTEM STOP MERGES {{db}}.`{name}`")
        only = set(filter(None, args.only.split(",")))
        per_table: dict[str, float] = {}
        start = _cpu_s()
        for table, columns, rows in captured:
            if only and table not in only:
                continue
            before = _cpu_s()
            ch.insert(table, rows, columns)
            per_table[table] = per_table.get(table, 0.0) + _cpu_s() - before
        inserted = _cpu_s() - start
        time.sleep(args.settle)
        total = _cpu_s() - start
        us = 1e6 / args.events
        print(f"settings: {extra or 'default'}; tables: {', '.join(sorted(only)) or 'all'}"
              + ("; without the copies' views" if args.drop_views else "")
              + (f"; tables with {args.table_settings}" if args.table_settings else "")
              + ("; merges stopped" if args.stop_merges else ""))
        for table, s in sorted(per_table.items(), key=lambda kv: -kv[1]):
            print(f"  {table:20s} {s * us:6.2f} CPU-µs per event (inserts, their views included)")
        print(f"inserts {inserted * us:.2f}, with {args.settle:.0f} s of merges after {total * us:.2f} CPU-µs per event")
        parts = ch.rows("SELECT table, count() FROM system.parts WHERE database = {d:String} AND active "
                        "GROUP BY table ORDER BY table", {"d": ch.database})
        print("active parts after:", ", ".join(f"{t} {n}" for t, n in parts))
    finally:
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
