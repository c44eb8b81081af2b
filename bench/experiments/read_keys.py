"""Do other sorting keys / indexes make the slow reads fast? Same synthetic rows, same `query.views.page`.

    AUTOLOGS_DATA_DIR=/tmp/x python -m bench.experiments.read_keys [--rows 10000000] [--pages 40]

Builds, in one scratch chdb, the project's tables (database `cur`) and variants (one database each, the
DDL below), fills them with the same rows (bench/dataset.py; the variants are copied with INSERT SELECT),
then times the same pages against each database (the read code is unchanged: `{db}` names the database).
Variants:
- `day`: event_log ORDER BY (account_id, toDate(occurred_at), email, occurred_at, event_id) — the day
  before the email, so a time range prunes granules without an email, and an email costs one seek per day;
- `time`: event_log ORDER BY (account_id, occurred_at, event_id) (what a copy keyed by time, fed by a
  materialized view, would give account-wide pages and CSV dumps); `events_account_1h` asks only the last
  hour of the range (what a page that widens its window until it has limit+1 rows would ask first);
- `sc_bloom1`: scenario_log with its email bloom filter at GRANULARITY 1 (instead of 4);
- `sc_email`: scenario_log ORDER BY (account_id, email, occurred_at, scenario_id, source_event_id) (what a
  copy keyed by contact, fed by a materialized view, would give the email-filtered scenario page).
Prints one JSON object: {variant: {case: p50/p99 ms}}.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time

from bench import dataset
from bench.reads import log, measure, settle


def _ddl(ch, table: str) -> str:
    return ch.rows("SELECT create_table_query FROM system.tables WHERE database = {d:String} AND name = {t:String}",
                   {"d": "cur", "t": table})[0][0]


def variant(ch, db: str, table: str, ddl: str, rows: int) -> None:
    ch.command(f"CREATE DATABASE IF NOT EXISTS `{db}`")
    for t in ("event_log", "scenario_log", "enrollment_state"):  # views read other tables only when asked
        if t != table:
            ch.command(f"CREATE TABLE IF NOT EXISTS `{db}`.{t} AS cur.{t}")
    ch.command(ddl)
    if ch.rows(f"SELECT count() FROM `{db}`.{table}")[0][0] == 0:
        t0 = time.monotonic()
        cols = ", ".join(dataset.columns(table))
        for first in range(0, rows, dataset.BLOCK):  # copy block by block (bounded memory)
            ch.command(f"INSERT INTO `{db}`.{table} ({cols}) SELECT {cols} FROM cur.{table} "
                       f"WHERE src_offset >= {first} AND src_offset < {first + dataset.BLOCK}",
                       settings={"max_threads": 2, "max_insert_threads": 2})
        log(f"{db}.{table}: copied in {time.monotonic() - t0:.1f}s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--pages", type=int, default=40)
    ap.add_argument("--csv-rows", type=int, default=1_000_000)
    args = ap.parse_args()

    from autologs.clickhouse import ClickHouse
    from autologs.config import get_settings
    from autologs.migrate import migrate

    settings = get_settings()
    ch = ClickHouse(settings, database="cur")
    migrate(ch)
    for table, select in (("event_log", dataset.event_log_select), ("scenario_log", dataset.scenario_log_select)):
        if ch.rows(f"SELECT count() FROM {{db}}.{table}")[0][0] == 0:
            dataset.fill(ch, table, select, args.rows, log)

    el, sl = _ddl(ch, "event_log"), _ddl(ch, "scenario_log")
    day = re.sub(r"ORDER BY \(account_id, email, occurred_at, event_id\)",
                 "ORDER BY (account_id, toDate(occurred_at), email, occurred_at, event_id)", el)
    by_time = re.sub(r"ORDER BY \(account_id, email, occurred_at, event_id\)",
                     "ORDER BY (account_id, occurred_at, event_id)", el)
    bloom1 = sl.replace("TYPE bloom_filter GRANULARITY 4", "TYPE bloom_filter GRANULARITY 1")
    by_email = re.sub(r"ORDER BY \(account_id, scenario_id, occurred_at, source_event_id\)",
                      "ORDER BY (account_id, email, occurred_at, scenario_id, source_event_id)", sl)
    assert day != el and by_time != el and bloom1 != sl and by_email != sl, "the DDL changed: update the patterns"
    for db, table, ddl in (("day", "event_log", day), ("time", "event_log", by_time), ("sc_bloom1", "scenario_log", bloom1),
                           ("sc_email", "scenario_log", by_email)):
        variant(ch, db, table, ddl.replace("cur.", f"`{db}`.", 1).replace("CREATE TABLE", "CREATE TABLE IF NOT EXISTS", 1),
                args.rows)
    log(f"merges settled after {settle(ch, 300)}s")

    first, last = dataset.period()
    week = "2026-10-24"
    contacts = dataset.sample_contacts(ch, args.pages + 1, 7)
    p = args.pages
    ev_email = [(a, {"email": e, "from": first, "to": last}) for a, e in contacts]
    ev_account = [(a, {"from": week, "to": last}) for a, _ in contacts[: p // 2 + 1]]
    ev_account_1h = [(a, {"from": f"{last}T23:00:00+00:00", "to": last}) for a, _ in contacts[: p // 2 + 1]]
    sc_email = [(a, {"email": e, "from": first, "to": last}) for a, e in contacts[: p // 2 + 1]]
    sc_scen = [(a, {"scenario": f"auto-{a}-{i % dataset.SCENARIOS_PER_ACCOUNT}", "from": first, "to": last})
               for i, (a, _) in enumerate(contacts[: p // 2 + 1])]
    plan = {"cur": [("events_email", "events", ev_email), ("events_account", "events", ev_account),
                    ("events_account_1h", "events", ev_account_1h),
                    ("scenarios_email", "scenarios", sc_email), ("scenarios_scenario", "scenarios", sc_scen)],
            "day": [("events_email", "events", ev_email), ("events_account", "events", ev_account)],
            "time": [("events_email", "events", ev_email), ("events_account", "events", ev_account),
                     ("events_account_1h", "events", ev_account_1h)],
            "sc_bloom1": [("scenarios_email", "scenarios", sc_email), ("scenarios_scenario", "scenarios", sc_scen)],
            "sc_email": [("scenarios_email", "scenarios", sc_email), ("scenarios_scenario", "scenarios", sc_scen)]}
    out: dict = {}
    for db, cases in plan.items():
        c = ClickHouse(settings, database=db)
        for name, view, calls in cases:
            r = measure(c, view, calls)
            out.setdefault(db, {})[name] = {"p50_ms": r["p50_ms"], "p99_ms": r["p99_ms"], "rows": r["rows_per_page"]}
            log(f"{db} {name}: p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms")
    # CSV dump of the newest csv_rows rows of acct-1, current key vs `day` and `time`.
    import io

    from query.csv_export import export_csv

    (start,), = ch.rows("SELECT min(t) FROM (SELECT occurred_at AS t FROM {db}.event_log WHERE account_id = 'acct-1' "
                        "ORDER BY occurred_at DESC LIMIT {k:UInt64})", {"k": args.csv_rows})
    params = {"from": start.isoformat(timespec="milliseconds") + "+00:00", "to": last}
    for db in ("cur", "day", "time"):
        c = ClickHouse(settings, database=db)
        t0 = time.perf_counter()
        n = export_csv(c, "events", "acct-1", params, io.BytesIO())
        s = time.perf_counter() - t0
        out[db]["csv"] = {"rows": n, "seconds": round(s, 2), "rows_per_s": round(n / s)}
        log(f"{db} csv: {n:,} rows in {s:.1f}s = {n / s:,.0f} rows/s")
    json.dump(out, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
