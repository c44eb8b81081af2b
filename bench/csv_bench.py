"""CSV dump benchmark: `query.csv_export.export_csv` of a range of R event-log rows to a file.

    python -m bench.csv_bench --rows N --csv-rows R --out FILE
    (env: AUTOLOGS_DATA_DIR, AUTOLOGS_CLICKHOUSE_DATABASE: a scratch database; the read benchmark's
    data dir of N rows is reused when it holds them, else the table is generated first, bench/dataset.py)

The event log is generated into event_log, and its materialized view fills the dumps' time-ordered copy
event_log_by_time at the same time (before the timed part). The dump is the largest account's newest R rows (account + a date range starting at the R-th newest
row's time: what "export the last days of my log" does), to a file on disk. Measured:
- rows/s = rows written / wall time of export_csv;
- RSS growth = the peak of VmRSS (sampled from /proc/self/status every 50 ms in a thread; the engine runs
  in this process, so its memory counts) minus VmRSS just before the export.
"""
from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from datetime import timezone

from bench.common import finish_child


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] csv: {msg}", file=sys.stderr, flush=True)


def status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


class RssSampler(threading.Thread):
    def __init__(self, every_s: float = 0.05):
        super().__init__(daemon=True)
        self.every_s = every_s
        self.peak_kb = status_kb("VmRSS")
        self.samples = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            self.peak_kb = max(self.peak_kb, status_kb("VmRSS"))
            self.samples += 1
            self._halt.wait(self.every_s)

    def stop(self) -> None:
        self._halt.set()
        self.join()
        self.peak_kb = max(self.peak_kb, status_kb("VmRSS"))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, required=True, help="rows of the event log to export from")
    ap.add_argument("--csv-rows", type=int, required=True, help="rows of the exported range")
    ap.add_argument("--account", default="acct-1")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)

    from autologs.clickhouse import ClickHouse
    from autologs.config import get_settings
    from autologs.migrate import migrate
    from bench import dataset
    from bench.reads import settle
    from query.csv_export import DUMP_TABLES, EXPORT_CHUNK_ROWS, export_csv

    settings = get_settings()
    ch = ClickHouse(settings)
    migrate(ch)
    have = ch.rows("SELECT count() FROM {db}.event_log")[0][0]
    built = None
    if have == 0:
        built = round(dataset.fill(ch, "event_log", dataset.event_log_select, args.rows, log), 2)
    elif have != args.rows:
        raise SystemExit(f"event_log holds {have:,} rows, not {args.rows:,}: use an empty data dir")
    # Also when the reads' data dir is reused: opening it may start merges, which would share the CPU with
    # the timed dump (a full run once measured 480k rows/s here and 614k in a rerun).
    settled = settle(ch)
    log(f"merges settled after {settled}s")
    # The dump reads the time-ordered copy (query/csv_export.py DUMP_TABLES), filled by its materialized view
    # while the table was generated (or by the migration's backfill for an older data dir): not timed.
    copy_rows = ch.rows("SELECT count() FROM {db}.event_log_by_time")[0][0]
    if copy_rows < (have or args.rows):
        raise SystemExit(f"event_log_by_time holds {copy_rows:,} rows, fewer than event_log: use an empty data dir")
    (start, total), = ch.rows("SELECT min(t), any(n) FROM (SELECT occurred_at AS t, count() OVER () AS n "
                              "FROM {db}.event_log WHERE account_id = {a:String} "
                              "ORDER BY occurred_at DESC LIMIT {k:UInt64})", {"a": args.account, "k": args.csv_rows})
    first = start.replace(tzinfo=timezone.utc).isoformat(timespec="milliseconds")
    last = dataset.period()[1]
    params = {"from": first, "to": last}
    path = settings.data_dir / "export.csv"
    log(f"exporting {args.account} from {first} to {last} (~{args.csv_rows:,} rows of {have or args.rows:,})")

    done = {"rows": 0, "last": time.monotonic()}

    def progress(n: int) -> None:
        done["rows"] += n
        if time.monotonic() - done["last"] >= 2:
            done["last"] = time.monotonic()
            log(f"{done['rows']:,} rows, RSS {status_kb('VmRSS') / 1024:,.0f} MB")

    before_kb = status_kb("VmRSS")
    sampler = RssSampler()
    sampler.start()
    t0 = time.perf_counter()
    with open(path, "wb") as f:
        rows = export_csv(ch, "events", args.account, params, f, progress)
    elapsed = time.perf_counter() - t0
    sampler.stop()
    size = path.stat().st_size
    path.unlink()
    out = {
        "rows": rows, "expected_rows": args.csv_rows, "table_rows": have or args.rows, "table_built_s": built,
        "merges_settled_s": settled,
        "account": args.account, "account_rows": total, "params": params, "seconds": round(elapsed, 3),
        "rows_per_s": round(rows / elapsed, 1), "mb_per_s": round(size / elapsed / 2**20, 1),
        "bytes": size, "rss_before_mb": round(before_kb / 1024, 1), "rss_peak_mb": round(sampler.peak_kb / 1024, 1),
        "rss_growth_mb": round((sampler.peak_kb - before_kb) / 1024, 1), "rss_samples": sampler.samples,
        "chunk_rows": EXPORT_CHUNK_ROWS, "dump_table": DUMP_TABLES.get("events", "event_log"),
        "copy_rows": copy_rows, "pid": os.getpid(),
    }
    log(f"{rows:,} rows in {elapsed:.1f}s = {out['rows_per_s']:,.0f} rows/s ({out['mb_per_s']} MB/s), "
        f"RSS {out['rss_before_mb']} -> peak {out['rss_peak_mb']} MB (+{out['rss_growth_mb']} MB)")
    return finish_child(args.out, out, ch)


if __name__ == "__main__":
    main()
