"""The benchmarks: ingest (Faust worker vs a raw aiokafka loop vs quixstreams), freshness, replay, reads, CSV.

    python -m bench.run [--smoke] [--events N] [--only faust,raw,quix,freshness,replay,reads,csv] [--profile [gil]]
                        [--read-rows N1,N2] [--pages P] [--csv-rows R] [--freshness-rate R] [--freshness-seconds S]
                        [--variant NAME:MODULE[:K=V,K=V]] [--worker-env K=V] [--rounds R] [--tree REV|PATH]
                        [--out FILE]

Ingest (faust, raw, quix, variants):
1. N events of the realistic simulate mix are produced FIRST to a fresh topic prefix (not timed).
2. Each consumer runs in its own process, with its own chdb data dir under /tmp and its own consumer
   group on that same topic: `autologs worker` (group <prefix>-worker), bench.raw_loop (<prefix>-raw),
   bench.quix_app (<prefix>-quix), then any --variant (bench.experiments.worker, group <prefix>-NAME).
3. Timed from the first row written (the process's counters, polled every 0.1 s) until the group's
   committed lag is 0; rate = rows written after that first moment / elapsed time. With --rounds R
   (default 2) each of faust, raw and quix runs R times, every other round in reverse order, and its
   best round is its figure (all rounds are kept in the results).
4. The process is stopped and `SELECT count() FROM {db}.event_log FINAL` must equal N.
freshness (bench/freshness.py): a fresh worker, events paced at half the Faust worker's rate of this run,
   produce time (properties.sent_ms) to ingested_at, p50/p99 in SQL.
replay (bench/replay_bench.py): a full default replay of the ingest topics, in its own process.
reads (bench/reads.py): pages through query.views.page on synthetic tables of 1M and 10M rows, in their
   own processes; csv (bench/csv_bench.py): export_csv of a 1M-row range of the 10M table.
Writes bench/results/latest.json for a complete run (results/partial.json for --smoke / --only, so that
latest.json and the README keep the last complete run), a timestamped copy, and prints the table that
bench/report.py renders; a complete run also replaces the README block between <!-- bench:start --> and
<!-- bench:end --> when both markers exist. Temporary data dirs and the benchmark's topics are removed
at the end; every wait is bounded.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from bench.common import (
    LagProbe, Proc, bench_env, count_rows, free_port, log, machine_busy_s, process_cpu_s, run_child, threads_cpu_s,
)

RESULTS = Path(os.environ.get("BENCH_RESULTS_DIR") or Path(__file__).resolve().parent / "results")
ROOT = Path(__file__).resolve().parents[1]


# --- producing ---------------------------------------------------------------------------------------
def produce(prefix: str, n: int, data_dir: Path) -> dict:
    os.environ.update(AUTOLOGS_TOPIC_PREFIX=prefix, AUTOLOGS_DATA_DIR=str(data_dir))
    from autologs.config import Settings
    from streams.simulate import SimulationSpec, run_simulation

    settings = Settings(topic_prefix=prefix, data_dir=data_dir)
    # 140,000 contacts give 1M events in the simulated day; fewer events need fewer contacts.
    spec = SimulationSpec(contacts=140_000 if n >= 1_000_000 else int(n * 0.14) + 2000, max_events=n)
    state = {"sent": 0, "last": time.monotonic()}
    began = time.monotonic()

    def progress(k: int) -> None:
        state["sent"] += k
        if time.monotonic() - state["last"] >= 2:
            state["last"] = time.monotonic()
            log(f"produce: {state['sent']:,}/{n:,} ({state['sent'] / (time.monotonic() - began):,.0f}/s)")

    sent = asyncio.run(run_simulation(settings, spec, progress=progress))
    if sent != n:
        raise SystemExit(f"the simulation gave {sent} events, not {n}: raise contacts")
    took = time.monotonic() - began
    log(f"produced {sent:,} events in {took:.1f}s")
    return {"events": sent, "seconds": round(took, 2)}


async def measure(p: Proc, n: int, bootstrap: str, topic: str, timeout: float, profile_to: Path | None,
                  gil: bool = False) -> dict:
    """From the first row written until the group's committed lag is 0. With `gil`, py-spy samples only the
    thread that holds the GIL: each thread's share of those samples is its share of the GIL."""
    probe = LagProbe(bootstrap, p.group, topic)
    await probe.start()
    spy = None
    try:
        ready_deadline = time.monotonic() + 180
        while p.rows_written() == 0:
            if not p.alive():
                raise RuntimeError(f"{p.name} exited:\n{p.log_tail()}")
            if time.monotonic() > ready_deadline:
                raise RuntimeError(f"{p.name} wrote nothing in 180 s:\n{p.log_tail()}")
            await asyncio.sleep(0.05)
        t0, r0 = time.monotonic(), p.rows_written()
        cpu0, busy0 = process_cpu_s(p.proc.pid) if p.proc else None, machine_busy_s()
        threads0 = threads_cpu_s(p.proc.pid) if p.proc else None
        if profile_to is not None and p.proc is not None:
            spy = subprocess.Popen([_py_spy(), "record", "--pid", str(p.proc.pid),
                                    "--rate", "250", "--format", "raw", "--output", str(profile_to),
                                    "--nonblocking", "--threads", *(["--gil"] if gil else [])],
                                   stdout=subprocess.DEVNULL, stderr=open(p.data_dir / "py-spy.log", "ab"))
        deadline = t0 + timeout
        last_print = t0
        rows_done_at = None
        while True:
            now = time.monotonic()
            if now > deadline:
                raise RuntimeError(f"{p.name}: timeout after {timeout:.0f}s at {p.rows_written():,} rows")
            if not p.alive():
                raise RuntimeError(f"{p.name} exited:\n{p.log_tail()}")
            rows = p.rows_written()
            if rows >= n:
                rows_done_at = rows_done_at or now
                if await probe.lag() == 0:
                    t1 = time.monotonic()
                    cpu1, busy1 = process_cpu_s(p.proc.pid) if p.proc else None, machine_busy_s()
                    threads1 = threads_cpu_s(p.proc.pid) if p.proc else None
                    break
            if now - last_print >= 2:
                last_print = now
                lag = await probe.lag()
                log(f"{p.name}: {rows:,}/{n:,} rows written, lag {lag:,}, "
                    f"{(rows - r0) / (now - t0):,.0f} rows/s")
            await asyncio.sleep(0.1)
    finally:
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            try:
                spy.wait(timeout=60)
            except subprocess.TimeoutExpired:
                spy.kill()
        await probe.stop()
    elapsed = t1 - t0
    gc_stats = p.health().get("gc") or {}
    if gc_stats:
        log(f"{p.name}: garbage collections {gc_stats.get('collections')}, {gc_stats.get('seconds', 0):.2f} s in all, "
            f"longest {gc_stats.get('longest_s', 0):.2f} s")
    done = n - r0 if n > r0 else n  # everything in the first batch (smoke): a lower bound
    # CPU: what the process used per event, and how busy the whole machine was (broker, engine, bench).
    cpu = {}
    if cpu0 is not None and cpu1 is not None:
        cpu["cpu_us_per_event"] = round((cpu1 - cpu0) / done * 1e6, 1)
        cpu["process_cores"] = round((cpu1 - cpu0) / elapsed, 2)
    if threads0 and threads1 and "process_cores" in cpu:
        main, python = (round((threads1[g] - threads0[g]) / elapsed, 2) for g in ("main", "python"))
        # native: the rest of the process (threads that ended meanwhile included)
        cpu["thread_cores"] = {"main": main, "python": python,
                               "native": round(max(cpu["process_cores"] - main - python, 0), 2)}
    if busy0 is not None and busy1 is not None:
        cpu["machine_busy_cores"] = round((busy1 - busy0) / elapsed, 2)
        cpu["machine_cores"] = os.cpu_count()
    if cpu:
        log(f"{p.name}: {cpu.get('cpu_us_per_event', '?')} CPU-µs per event; the process used "
            f"{cpu.get('process_cores', '?')} cores ({cpu.get('thread_cores', '?')}), the machine "
            f"{cpu.get('machine_busy_cores', '?')} of {os.cpu_count()}")
    return {"events_per_s": round(done / elapsed, 1), "seconds": round(elapsed, 3), "rows_at_start": r0, **cpu,
            "single_batch": r0 >= n,  # everything landed in the first insert: the rate means nothing (smoke)
            "rows_only_events_per_s": round(done / max(rows_done_at - t0, 1e-3), 1), "gc": gc_stats}


def _py_spy() -> str:
    """py-spy from the bench extra: the venv's bin first (not always on PATH), then PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    found = str(beside) if beside.exists() else shutil.which("py-spy")
    if not found:
        sys.exit("py-spy not found: install the bench extra (pip install -e '.[bench]') or run without --profile")
    return found


def run_consumer(p: Proc, n: int, bootstrap: str, topic: str, profile_to: Path | None = None,
                 gil: bool = False) -> dict:
    log(f"{p.name}: starting ({' '.join(p.cmd[-3:])}), group {p.group}")
    p.start()
    try:
        timeout = max(300.0, n / 1000)
        result = asyncio.run(measure(p, n, bootstrap, topic, timeout, profile_to, gil))
    finally:
        p.stop()
    count = count_rows(p.env)
    result["count_final"] = count
    result["ok"] = count == n
    log(f"{p.name}: {result['events_per_s']:,.0f} events/s over {result['seconds']:.1f}s; "
        f"count FINAL = {count:,} ({'ok' if count == n else 'MISMATCH'})")
    if count != n:
        raise RuntimeError(f"{p.name}: count() FINAL = {count}, expected {n}")
    return result


# --- topics cleanup ----------------------------------------------------------------------------------
async def delete_prefix_topics(bootstrap: str, prefix: str) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        names = [t for t in await admin.list_topics() if t.startswith(prefix)]
        if names:
            await admin.delete_topics(names)
    finally:
        await admin.close()


def machine_info() -> dict:
    model = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu_model": model or platform.processor(), "python": platform.python_version(),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "loadavg_at_start": os.getloadavg()}


def run_in_tree(tree: str, argv: list[str], out: str) -> dict:
    """Re-run this command inside another source tree (others may be mid-edit in the working tree)."""
    clean, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == "--tree":
            skip = True
            continue
        if a.startswith("--tree="):
            continue
        clean.append(a)
    tmp = None
    if Path(tree).is_dir():
        src = Path(tree).resolve()
    else:
        tmp = Path(tempfile.mkdtemp(prefix="autologs-bench-tree-"))
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", tree], capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tmp)], input=archive, check=True)
        shutil.rmtree(tmp / "bench", ignore_errors=True)
        shutil.copytree(ROOT / "bench", tmp / "bench", ignore=shutil.ignore_patterns("results", "__pycache__"))
        src = tmp
        log(f"benchmarking git {tree} ({subprocess.run(['git', '-C', str(ROOT), 'rev-parse', '--short', tree], capture_output=True, text=True).stdout.strip()}) exported to {src}")
    env = {**os.environ, "PYTHONPATH": str(src), "BENCH_RESULTS_DIR": str(RESULTS), "BENCH_TREE": tree,
           "BENCH_README": os.environ.get("BENCH_README") or str(ROOT / "README.md")}
    try:
        subprocess.run([sys.executable, "-m", "bench.run", *clean, "--out", out], cwd=src, env=env, check=True)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return json.loads(Path(out).read_text())


def parse_env(pairs: str | list[str]) -> dict[str, str]:
    items = pairs.split(",") if isinstance(pairs, str) else pairs
    return dict(kv.split("=", 1) for kv in items if kv)


PARTS = ("faust", "raw", "quix", "freshness", "replay", "reads", "csv")
INGEST = ("faust", "raw", "quix")
# Every figure of latest.json (bench/report.py holds their goals), null when not measured.
FIXED_KEYS = ("ingest_events_per_s", "ingest_ratio_vs_raw", "ingest_ratio_vs_quixstreams", "freshness_p50_s",
              "freshness_p99_s", "page_ms_p50_1m", "page_ms_p99_1m", "page_ms_p50_10m", "page_ms_p99_10m",
              "contacts_page_ms_p50_1m", "csv_rows_per_s", "csv_rss_growth_mb", "replay_events_per_s")
FULL = dict(read_rows=(1_000_000, 10_000_000), enrollments=1_000_000, pages=200, csv_rows=1_000_000,
            freshness_s=45.0, warmup=500)
SMOKE = dict(events=5_000, read_rows=(20_000, 100_000), enrollments=20_000, pages=20, csv_rows=20_000,
             freshness_s=8.0, freshness_rate=500.0, warmup=100)


def previous_ingest_rate() -> float | None:
    try:
        return json.loads((RESULTS / "latest.json").read_text()).get("ingest_events_per_s")
    except (OSError, ValueError):
        return None


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000, help="events produced (default 1,000,000)")
    ap.add_argument("--smoke", action="store_true",
                    help="tiny sizes (5,000 events, reads on 20k/100k rows, 8 s of freshness): checks the harness "
                         "end to end in about 2 minutes; its figures mean nothing")
    ap.add_argument("--only", default=",".join(PARTS),
                    help=f"comma list among {','.join(PARTS)} (default all)")
    ap.add_argument("--read-rows", default=None, metavar="N1,N2",
                    help="sizes of the read benchmark (default 1000000,10000000: the keys *_1m and *_10m)")
    ap.add_argument("--pages", type=int, default=None, help="timed event-log pages per size (default 200)")
    ap.add_argument("--csv-rows", type=int, default=None, help="rows of the CSV dump (default 1,000,000)")
    ap.add_argument("--freshness-rate", type=float, default=None,
                    help="events/s of the freshness run (default: half the Faust worker's rate of this run, "
                         "else of results/latest.json)")
    ap.add_argument("--freshness-seconds", type=float, default=None, help="length of the paced run (default 45)")
    ap.add_argument("--profile", nargs="?", const="threads", choices=("threads", "gil"), default=None,
                    help="attach py-spy to the Faust worker while timed (slows it: its rate is then not the headline); "
                         "'gil' samples only the thread holding the GIL (results/profile_faust_worker_gil.txt)")
    ap.add_argument("--worker-env", action="append", default=[], metavar="K=V",
                    help="extra environment of every consumer (e.g. AUTOLOGS_SINK_MAX_ROWS=50000)")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME:MODULE[:K=V,K=V]",
                    help="also run bench.experiments.worker with BENCH_AGENTS_MODULE=MODULE ('-' = the project's)")
    ap.add_argument("--rounds", type=int, default=None,
                    help="runs of each ingest consumer, every other round in reverse order; each one's best "
                         "round is its figure (default 2; 1 with --smoke or --profile)")
    ap.add_argument("--out", default=None,
                    help="results file (default results/latest.json for a full run; results/partial.json for "
                         "--smoke or --only: latest.json and the README keep the last full run)")
    ap.add_argument("--tree", default=None, metavar="REV|PATH",
                    help="benchmark another source tree: a git revision (e.g. HEAD, exported to /tmp with this "
                         "bench/ copied in) or a directory; default: this working tree")
    args = ap.parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(only) - set(PARTS))
    if unknown:
        ap.error(f"--only: unknown part {unknown[0]!r}; parts: {', '.join(PARTS)}")
    complete = set(only) == set(PARTS) and not args.smoke and not args.profile and not args.variant
    out_path = Path(args.out) if args.out else RESULTS / ("latest.json" if complete else "partial.json")
    if args.tree:
        return run_in_tree(args.tree, [a for a in (argv if argv is not None else sys.argv[1:])], str(out_path))
    sizes = {**FULL, **(SMOKE if args.smoke else {})}
    n = sizes["events"] if args.smoke else args.events
    read_rows = [int(x) for x in args.read_rows.split(",")] if args.read_rows else list(sizes["read_rows"])
    pages = args.pages or sizes["pages"]
    csv_rows = args.csv_rows or sizes["csv_rows"]
    fresh_s = args.freshness_seconds or sizes["freshness_s"]
    RESULTS.mkdir(parents=True, exist_ok=True)
    info = machine_info()
    began = time.monotonic()
    timings: dict[str, float] = {}
    prefix = f"bench{int(time.time())}p{os.getpid()}"
    tmp = Path(tempfile.mkdtemp(prefix="autologs-bench-"))
    extra = parse_env(args.worker_env)
    os.environ.setdefault("AUTOLOGS_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    bootstrap = os.environ["AUTOLOGS_KAFKA_BOOTSTRAP"]
    topic = f"{prefix}.events"
    results: dict = {}
    parts: dict = {}
    procs: list[Proc] = []
    production = None

    def timed(name: str, fn, *a, **kw):
        """One part: its time recorded; a failure is recorded and the run goes on."""
        t0 = time.monotonic()
        try:
            parts[name] = fn(*a, **kw)
        except Exception as exc:
            log(f"{name} failed: {exc}")
            parts[name] = {"error": str(exc)[-2000:]}
        timings[name] = round(time.monotonic() - t0, 1)
        return parts[name]

    try:
        log(f"parts {','.join(only)}; N = {n:,}, reads on {read_rows}, topic prefix {prefix}, temp dir {tmp}, "
            f"{info['nproc']} cpus, load {info['loadavg_at_start']}")
        if any(p in only for p in (*INGEST, "replay")) or args.variant:
            t0 = time.monotonic()
            production = produce(prefix, n, tmp / "producer")
            timings["produce"] = round(time.monotonic() - t0, 1)

        def env_for(name: str, **more: str) -> tuple[dict[str, str], int, Path]:
            port = free_port()
            d = tmp / name
            return bench_env(d, prefix, port, **extra, **more), port, d

        t0 = time.monotonic()
        commands = {"faust": [sys.executable, "-m", "autologs.cli", "worker"],
                    "raw": [sys.executable, "-m", "bench.raw_loop", "--group"],
                    "quix": [sys.executable, "-m", "bench.quix_app", "--group"]}
        trio = [name for name in INGEST if name in only]
        gil = args.profile == "gil"
        gil_suffix = "_gil" if gil else ""
        rounds = args.rounds if args.rounds is not None else (1 if args.smoke or args.profile else 2)
        for r in range(1, rounds + 1):
            # Every other round in reverse order: the machine drifts (disk, caches), and no consumer is
            # always first. Each run has its own consumer group and data dir.
            for name in (trio if r % 2 else trio[::-1]):
                label = name if rounds == 1 else f"{name} (round {r})"
                suffix = "" if r == 1 else f"-r{r}"
                group = f"{prefix}-worker{suffix}" if name == "faust" else f"{prefix}-{name}{suffix}"
                more = {"BENCH_APP_ID": group} if name == "faust" and r > 1 else {}
                env, port, d = env_for(f"{name}{suffix}", **more)
                # The worker's consumer group is its app id, derived from the topic prefix: later rounds run
                # the same worker under another app id (bench.experiments.worker, the project's agents).
                cmd = (commands[name] if r == 1 else [sys.executable, "-m", "bench.experiments.worker"]) \
                    if name == "faust" else commands[name] + [group]
                p = Proc(label, cmd, env, d, group, port if name == "faust" else None)
                procs.append(p)
                try:
                    got = run_consumer(p, n, bootstrap, topic, RESULTS / f"profile_faust_worker{gil_suffix}.txt"
                                       if args.profile and name == "faust" and r == 1 else None, gil)
                except Exception as exc:
                    if name == "faust":
                        raise
                    log(f"{label} failed: {exc}")
                    got = {"error": str(exc)[-2000:]}
                results.setdefault(name, {"rounds": []})["rounds"].append(got)
        for name in trio:  # the best round of each: the one the machine disturbed least
            done = [g for g in results[name]["rounds"] if "events_per_s" in g]
            if done:
                results[name].update(max(done, key=lambda g: g["events_per_s"]))
            else:
                results[name]["error"] = results[name]["rounds"][-1].get("error", "failed")
        for spec in args.variant:
            name, module, *rest = spec.split(":", 2)
            more = parse_env(rest[0]) if rest else {}
            group = f"{prefix}-{name}"
            if module != "-":
                more["BENCH_AGENTS_MODULE"] = module
            if "BENCH_FAUST_APP_ID" in more:  # keep Faust's own topics under the prefix: deleted at the end
                more["BENCH_FAUST_APP_ID"] = f"{group}-faust"
            env, port, d = env_for(name, BENCH_APP_ID=group, **more)
            p = Proc(name, [sys.executable, "-m", "bench.experiments.worker"], env, d, group, port)
            procs.append(p)
            try:
                results[name] = run_consumer(p, n, bootstrap, topic,
                                             RESULTS / f"profile_{name}{gil_suffix}.txt" if args.profile else None,
                                             gil)
                results[name].update(module=module, env=more)
            except Exception as exc:
                log(f"{name} failed: {exc}")
                results[name] = {"error": str(exc)[-2000:], "module": module, "env": more}
        if results:
            timings["ingest"] = round(time.monotonic() - t0, 1)

        if "freshness" in only:
            from bench.freshness import run_freshness

            faust_rate = None if args.smoke else ((results.get("faust") or {}).get("events_per_s")
                                                  or previous_ingest_rate())
            f_rate = args.freshness_rate or sizes.get("freshness_rate") or (faust_rate / 2 if faust_rate else 2000.0)
            timed("freshness", run_freshness, tmp, prefix, f_rate, fresh_s, extra, sizes["warmup"])
            parts["freshness"]["rate_basis"] = (
                "--freshness-rate" if args.freshness_rate else "smoke" if args.smoke else
                "half the Faust worker's rate of this run" if (results.get("faust") or {}).get("events_per_s")
                else "half the ingest rate of the previous latest.json" if faust_rate else "default 2000/s")

        if "replay" in only:
            # As many rounds as ingest, the best one its figure: compared with ingest's best round, one replay
            # would be one draw of the machine's drift against the better of two.
            replays = []
            for r in range(1, rounds + 1):
                env, _, d = env_for("replay" if r == 1 else f"replay-r{r}")
                d.mkdir(parents=True, exist_ok=True)
                replays.append(timed("replay", run_child, "replay" if rounds == 1 else f"replay (round {r})",
                                     "bench.replay_bench", ["--expect", str(n)], env, d / "out.json",
                                     max(600.0, n / 500)))
            done = [g for g in replays if g.get("ok")]
            parts["replay"] = dict(max(done, key=lambda g: g["events_per_s"]) if done else replays[-1],
                                   rounds=[g.get("events_per_s") for g in replays])

        read_dirs: dict[int, Path] = {}
        if "reads" in only:
            parts["reads"] = {}
            for k, rows in enumerate(read_rows):
                env, _, d = env_for(f"reads{rows}")
                d.mkdir(parents=True, exist_ok=True)
                t0 = time.monotonic()
                try:
                    parts["reads"][str(rows)] = run_child(
                        f"reads {rows:,}", "bench.reads",
                        ["--rows", str(rows), "--pages", str(pages),
                         "--enrollments", str(sizes["enrollments"] if k == 0 else 0)],
                        env, d / "out.json", 900 + rows / 10_000)
                    read_dirs[rows] = d
                except Exception as exc:
                    log(f"reads {rows:,} failed: {exc}")
                    parts["reads"][str(rows)] = {"error": str(exc)[-2000:]}
                timings[f"reads_{rows}"] = round(time.monotonic() - t0, 1)
                if rows != max(read_rows):
                    shutil.rmtree(d, ignore_errors=True)  # the largest is kept for the CSV dump

        if "csv" in only:
            # On the largest read table (reused when the reads ran; generated otherwise).
            rows = max(read_rows)
            env, _, d = env_for("csv")
            if rows in read_dirs:
                env["AUTOLOGS_DATA_DIR"] = str(read_dirs[rows])
                d = read_dirs[rows]
            d.mkdir(parents=True, exist_ok=True)
            timed("csv", run_child, "csv", "bench.csv_bench", ["--rows", str(rows), "--csv-rows", str(csv_rows)],
                  env, d / "csv.json", 900 + rows / 10_000)
    finally:
        for p in procs:
            p.stop()
        if production is not None or "freshness" in only:
            try:
                asyncio.run(asyncio.wait_for(delete_prefix_topics(bootstrap, prefix), 60))
            except Exception as exc:
                log(f"could not delete the topics of {prefix}: {exc!r}")
        shutil.rmtree(tmp, ignore_errors=True)

    out = summarize(results, parts, read_rows, csv_rows)
    out.update({
        "events": n,
        "reads_sizes": read_rows if "reads" in only else [],
        "read_pages": pages,
        "csv_rows": csv_rows if "csv" in only else None,
        "parts": only,
        "smoke": args.smoke,
        "profiled": args.profile,
        "worker_env": extra,
        "tree": os.environ.get("BENCH_TREE", "working tree"),
        "machine": {**info, "loadavg_at_end": os.getloadavg()},
        "timings_s": {**timings, "total": round(time.monotonic() - began, 1)},
        "production": production,
        "runs": results,
        **{k: parts[k] for k in ("freshness", "replay", "reads", "csv") if k in parts},
    })
    out_path.write_text(json.dumps(out, indent=2) + "\n")
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    (RESULTS / f"run-{stamp}-{n}.json").write_text(json.dumps(out, indent=2) + "\n")
    print_summary(out, results, info, n)
    from bench.report import README, render_table, update_readme

    table = render_table(out)
    print("\n" + table)
    if complete and out_path == RESULTS / "latest.json":
        if update_readme(table):
            print(f"README figures updated ({README})")
        else:
            print(f"no <!-- bench:start --> ... <!-- bench:end --> markers in {README}: table printed only")
    print(f"written to {out_path} ({out['timings_s']['total']:.0f}s in all)")
    return out


def _get(d: dict | None, *path):
    for k in path:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def summarize(results: dict, parts: dict, read_rows: list[int], csv_rows: int) -> dict:
    """The fixed keys (and a few context figures) from the raw results of each part."""
    def rate(k: str):
        return (results.get(k) or {}).get("events_per_s")

    faust, raw, quix = rate("faust"), rate("raw"), rate("quix")
    out: dict = {k: None for k in FIXED_KEYS}
    out.update(ingest_events_per_s=faust,
               ingest_ratio_vs_raw=round(faust / raw, 3) if faust and raw else None,
               ingest_ratio_vs_quixstreams=round(faust / quix, 3) if faust and quix else None)
    fresh = parts.get("freshness") or {}
    out.update(freshness_p50_s=fresh.get("p50_s"), freshness_p99_s=fresh.get("p99_s"))
    reads = parts.get("reads") or {}
    extra: dict = {}
    for label, rows in zip(("1m", "10m"), read_rows):
        r = reads.get(str(rows)) or {}
        out[f"page_ms_p50_{label}"] = _get(r, "events_email", "p50_ms")
        out[f"page_ms_p99_{label}"] = _get(r, "events_email", "p99_ms")
        extra[f"scenarios_page_ms_p50_{label}"] = _get(r, "scenarios_email", "p50_ms")
        extra[f"scenarios_by_scenario_page_ms_p50_{label}"] = _get(r, "scenarios_scenario", "p50_ms")
        extra[f"events_account_page_ms_p50_{label}"] = _get(r, "events_account", "p50_ms")
        if label == "1m":
            out["contacts_page_ms_p50_1m"] = _get(r, "contacts_default", "p50_ms")
            extra["contacts_email_page_ms_p50_1m"] = _get(r, "contacts_email", "p50_ms")
    csv = parts.get("csv") or {}
    out.update(csv_rows_per_s=csv.get("rows_per_s"), csv_rss_growth_mb=csv.get("rss_growth_mb"))
    replay = parts.get("replay") or {}
    out["replay_events_per_s"] = replay.get("events_per_s") if replay.get("ok") else None
    out.update(raw_loop_events_per_s=raw, quixstreams_events_per_s=quix,
               replay_ratio_vs_ingest=round(out["replay_events_per_s"] / faust, 3)
               if out["replay_events_per_s"] and faust else None,
               **extra)
    return out


def print_summary(out: dict, results: dict, info: dict, n: int) -> None:
    faust = out.get("ingest_events_per_s")
    print(f"\nN = {n:,} events, {info['nproc']} cpus ({info['cpu_model']}), {info['date']}")
    if results:
        print(f"{'consumer':<24}{'events/s':>12}{'seconds':>10}{'vs faust':>10}  count FINAL")
    for k, r in results.items():
        if "events_per_s" in r:
            rel = f"{r['events_per_s'] / faust:.2f}x" if faust else "-"
            print(f"{k:<24}{r['events_per_s']:>12,.0f}{r['seconds']:>10.1f}{rel:>10}  {r['count_final']:,}")
        else:
            print(f"{k:<24}{'failed':>12}  {r.get('error', '')[:80]}")
    for k in FIXED_KEYS:
        print(f"{k} = {out[k]}")


if __name__ == "__main__":
    main()
