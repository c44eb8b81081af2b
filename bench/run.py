"""Ingest benchmark: the Faust worker end to end, against a plain aiokafka loop and a quixstreams app.

    python -m bench.run [--smoke] [--events N] [--only faust,raw,quix] [--profile]
                        [--variant NAME:MODULE[:K=V,K=V]] [--worker-env K=V]

1. N events of the realistic simulate mix are produced FIRST to a fresh topic prefix (not timed).
2. Each consumer runs in its own process, with its own chdb data dir under /tmp and its own consumer
   group on that same topic: `autologs worker` (group <prefix>-worker), bench.raw_loop (<prefix>-raw),
   bench.quix_app (<prefix>-quix), then any --variant (bench.experiments.worker, group <prefix>-NAME).
3. Timed from the first row written (the process's counters, polled every 0.1 s) until the group's
   committed lag is 0; rate = rows written after that first moment / elapsed time.
4. The process is stopped and `SELECT count() FROM {db}.event_log FINAL` must equal N.
Writes bench/results/latest.json (and a timestamped copy) and prints a table. Temporary data dirs
and the benchmark's topics are removed at the end; every wait is bounded.
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
import threading
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

from bench.common import BENCH_DB, LagProbe, bench_env, count_rows

RESULTS = Path(os.environ.get("BENCH_RESULTS_DIR") or Path(__file__).resolve().parent / "results")
ROOT = Path(__file__).resolve().parents[1]
NULL_KEYS = ("freshness_p99_s", "page_ms_p50_10m", "contacts_page_ms_p50_1m", "csv_rows_per_s",
             "csv_rss_growth_mb", "replay_events_per_s")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


# --- one consumer process ----------------------------------------------------------------------------
class Proc:
    """A benchmarked process: its Popen, how to read its rows-written counter, how to stop it."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], data_dir: Path, group: str,
                 health_port: int | None = None):
        self.name, self.cmd, self.env, self.data_dir, self.group = name, cmd, env, data_dir, group
        self.health_port = health_port
        self.rows = 0
        self.log_path = data_dir / f"{name}.log"
        self.proc: subprocess.Popen | None = None
        self._reader: threading.Thread | None = None

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        err = open(self.log_path, "ab")
        if self.health_port is not None:  # the Faust worker: counters on /health
            self.proc = subprocess.Popen(self.cmd, env=self.env, stdout=err, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, cwd=ROOT)
        else:  # our loops: JSON lines on stdout
            self.proc = subprocess.Popen(self.cmd, env=self.env, stdout=subprocess.PIPE, stderr=err,
                                         stdin=subprocess.DEVNULL, cwd=ROOT)
            self._reader = threading.Thread(target=self._read, daemon=True)
            self._reader.start()

    def _read(self) -> None:
        assert self.proc and self.proc.stdout
        for line in self.proc.stdout:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if "rows_written" in msg:
                self.rows = max(self.rows, int(msg["rows_written"]))

    def rows_written(self) -> int:
        if self.health_port is None:
            return self.rows
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/health", timeout=2) as r:
                self.rows = int(json.loads(r.read()).get("rows_written", 0))
        except Exception:
            pass
        return self.rows

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 60) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)

    def log_tail(self, n: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except FileNotFoundError:
            return ""


async def measure(p: Proc, n: int, bootstrap: str, topic: str, timeout: float, profile_to: Path | None) -> dict:
    """From the first row written until the group's committed lag is 0."""
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
            if profile_to is not None and spy is None and p.proc is not None and p.health_port is not None \
                    and p.rows_written() == 0:
                pass
            await asyncio.sleep(0.05)
        t0, r0 = time.monotonic(), p.rows_written()
        if profile_to is not None and p.proc is not None:
            spy = subprocess.Popen([shutil.which("py-spy") or "py-spy", "record", "--pid", str(p.proc.pid),
                                    "--rate", "250", "--format", "raw", "--output", str(profile_to),
                                    "--nonblocking", "--threads"],
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
    done = n - r0 if n > r0 else n  # everything in the first batch (smoke): a lower bound
    return {"events_per_s": round(done / elapsed, 1), "seconds": round(elapsed, 3), "rows_at_start": r0,
            "single_batch": r0 >= n,  # everything landed in the first insert: the rate means nothing (smoke)
            "rows_only_events_per_s": round(done / max(rows_done_at - t0, 1e-3), 1)}


def run_consumer(p: Proc, n: int, bootstrap: str, topic: str, profile_to: Path | None = None) -> dict:
    log(f"{p.name}: starting ({' '.join(p.cmd[-3:])}), group {p.group}")
    p.start()
    try:
        timeout = max(300.0, n / 1000)
        result = asyncio.run(measure(p, n, bootstrap, topic, timeout, profile_to))
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
    env = {**os.environ, "PYTHONPATH": str(src), "BENCH_RESULTS_DIR": str(RESULTS), "BENCH_TREE": tree}
    try:
        subprocess.run([sys.executable, "-m", "bench.run", *clean, "--out", out], cwd=src, env=env, check=True)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return json.loads(Path(out).read_text())


def parse_env(pairs: str | list[str]) -> dict[str, str]:
    items = pairs.split(",") if isinstance(pairs, str) else pairs
    return dict(kv.split("=", 1) for kv in items if kv)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000, help="events produced (default 1,000,000)")
    ap.add_argument("--smoke", action="store_true", help="5,000 events: checks the harness end to end")
    ap.add_argument("--only", default="faust,raw,quix", help="comma list among faust,raw,quix (default all)")
    ap.add_argument("--profile", action="store_true",
                    help="attach py-spy to the Faust worker while timed (slows it: its rate is then not the headline)")
    ap.add_argument("--worker-env", action="append", default=[], metavar="K=V",
                    help="extra environment of every consumer (e.g. AUTOLOGS_SINK_MAX_ROWS=50000)")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME:MODULE[:K=V,K=V]",
                    help="also run bench.experiments.worker with BENCH_AGENTS_MODULE=MODULE ('-' = the project's)")
    ap.add_argument("--out", default=str(RESULTS / "latest.json"))
    ap.add_argument("--tree", default=None, metavar="REV|PATH",
                    help="benchmark another source tree: a git revision (e.g. HEAD, exported to /tmp with this "
                         "bench/ copied in) or a directory; default: this working tree")
    args = ap.parse_args(argv)
    if args.tree:
        return run_in_tree(args.tree, [a for a in (argv if argv is not None else sys.argv[1:])], args.out)
    n = 5_000 if args.smoke else args.events
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    RESULTS.mkdir(parents=True, exist_ok=True)
    info = machine_info()
    prefix = f"bench{int(time.time())}p{os.getpid()}"
    tmp = Path(tempfile.mkdtemp(prefix="autologs-bench-"))
    extra = parse_env(args.worker_env)
    os.environ.setdefault("AUTOLOGS_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    bootstrap = os.environ["AUTOLOGS_KAFKA_BOOTSTRAP"]
    topic = f"{prefix}.events"
    results: dict = {}
    procs: list[Proc] = []
    try:
        log(f"N = {n:,}, topic prefix {prefix}, temp dir {tmp}, {info['nproc']} cpus, load {info['loadavg_at_start']}")
        production = produce(prefix, n, tmp / "producer")

        def env_for(name: str, **more: str) -> tuple[dict[str, str], int, Path]:
            port = free_port()
            d = tmp / name
            return bench_env(d, prefix, port, **extra, **more), port, d

        if "faust" in only:
            env, port, d = env_for("faust")
            p = Proc("faust", [sys.executable, "-m", "autologs.cli", "worker"], env, d, f"{prefix}-worker", port)
            procs.append(p)
            results["faust"] = run_consumer(p, n, bootstrap, topic,
                                            RESULTS / "profile_faust_worker.txt" if args.profile else None)
        if "raw" in only:
            env, port, d = env_for("raw")
            p = Proc("raw", [sys.executable, "-m", "bench.raw_loop", "--group", f"{prefix}-raw"], env, d,
                     f"{prefix}-raw")
            procs.append(p)
            results["raw"] = run_consumer(p, n, bootstrap, topic)
        if "quix" in only:
            env, port, d = env_for("quix")
            p = Proc("quix", [sys.executable, "-m", "bench.quix_app", "--group", f"{prefix}-quix"], env, d,
                     f"{prefix}-quix")
            procs.append(p)
            try:
                results["quix"] = run_consumer(p, n, bootstrap, topic)
            except Exception as exc:
                log(f"quix failed: {exc}")
                results["quix"] = {"error": str(exc)[-2000:]}
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
                                             RESULTS / f"profile_{name}.txt" if args.profile else None)
                results[name].update(module=module, env=more)
            except Exception as exc:
                log(f"{name} failed: {exc}")
                results[name] = {"error": str(exc)[-2000:], "module": module, "env": more}
    finally:
        for p in procs:
            p.stop()
        try:
            asyncio.run(asyncio.wait_for(delete_prefix_topics(bootstrap, prefix), 60))
        except Exception as exc:
            log(f"could not delete the topics of {prefix}: {exc!r}")
        shutil.rmtree(tmp, ignore_errors=True)

    def rate(k: str):
        r = results.get(k) or {}
        return r.get("events_per_s")

    faust, raw, quix = rate("faust"), rate("raw"), rate("quix")
    out = {
        "ingest_events_per_s": faust,
        "ingest_ratio_vs_raw": round(faust / raw, 3) if faust and raw else None,
        "ingest_ratio_vs_quixstreams": round(faust / quix, 3) if faust and quix else None,
        **{k: None for k in NULL_KEYS},
        "raw_loop_events_per_s": raw,
        "quixstreams_events_per_s": quix,
        "events": n,
        "smoke": args.smoke,
        "profiled": args.profile,
        "worker_env": extra,
        "tree": os.environ.get("BENCH_TREE", "working tree"),
        "machine": {**info, "loadavg_at_end": os.getloadavg()},
        "production": production,
        "runs": results,
    }
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    (RESULTS / f"run-{stamp}-{n}.json").write_text(json.dumps(out, indent=2) + "\n")
    print(f"\nN = {n:,} events, {info['nproc']} cpus ({info['cpu_model']}), {info['date']}")
    print(f"{'consumer':<24}{'events/s':>12}{'seconds':>10}{'vs faust':>10}  count FINAL")
    for k, r in results.items():
        if "events_per_s" in r:
            rel = f"{r['events_per_s'] / faust:.2f}x" if faust else "-"
            print(f"{k:<24}{r['events_per_s']:>12,.0f}{r['seconds']:>10.1f}{rel:>10}  {r['count_final']:,}")
        else:
            print(f"{k:<24}{'failed':>12}  {r.get('error', '')[:80]}")
    for k in ("ingest_events_per_s", "ingest_ratio_vs_raw", "ingest_ratio_vs_quixstreams"):
        print(f"{k} = {out[k]}")
    print(f"written to {args.out}")
    return out


if __name__ == "__main__":
    main()
