"""Shared helpers of the benchmark harness: environments, progress lines, lag polling, counting rows."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from processors.pipeline import DictStates

BENCH_DB = "bench"
ROOT = Path(__file__).resolve().parents[1]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_env(data_dir: Path, prefix: str, port: int, **extra: str) -> dict[str, str]:
    """Environment of one benchmarked process: its own data dir, topic prefix, web port and database."""
    return {
        **os.environ,
        "AUTOLOGS_DATA_DIR": str(data_dir),
        "AUTOLOGS_TOPIC_PREFIX": prefix,
        "AUTOLOGS_WEB_PORT": str(port),  # never the default 6066: another developer's worker may own it
        "AUTOLOGS_CLICKHOUSE_DATABASE": BENCH_DB,
        **extra,
    }


def process_policies(settings) -> None:
    """The worker's GC and CPU policies, for a consumer of the benchmark (as in the worker). `--tree` runs this
    bench/ against older trees: a policy they lack is skipped."""
    from autologs import gcpolicy

    gcpolicy.install(settings.gc_interval_s)
    nice = getattr(settings, "engine_nice", None)
    if nice is not None:
        from autologs import cpupolicy

        cpupolicy.install(nice)


def validate_ahead(pipeline, messages):
    """`Pipeline.validate_ahead`, or None in a tree without it (`--tree`)."""
    ahead = getattr(pipeline, "validate_ahead", None)
    return ahead(messages) if ahead is not None else None


def emit(**fields) -> None:
    """One JSON line on stdout: how the benchmarked processes report to bench.run."""
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system, all threads) a process has used so far; None when unreadable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime
    except (OSError, IndexError, ValueError):
        return None


def threads_cpu_s(pid: int) -> dict[str, float] | None:
    """CPU seconds so far of a process's live threads, grouped: `main` (the event loop's thread), `python`
    (threads Python started: they keep the process's name) and `native` (threads the engine or a C client
    named: chdb's, librdkafka's). Why: the main thread's share tells whether the process is bound by it."""
    try:
        name = Path(f"/proc/{pid}/comm").read_text().strip()
        groups = {"main": 0.0, "python": 0.0, "native": 0.0}
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
            except OSError:
                continue  # ended meanwhile
            comm = stat[stat.index("(") + 1:stat.rindex(")")]
            fields = stat.rsplit(")", 1)[1].split()
            group = "main" if int(tid) == pid else "python" if comm == name else "native"
            groups[group] += (int(fields[11]) + int(fields[12])) / _TICK
        return groups
    except (OSError, IndexError, ValueError):
        return None


def machine_busy_s() -> float | None:
    """CPU seconds all cores of the machine have been busy so far (not idle, not waiting for I/O)."""
    try:
        user, nice, system, _idle, _iowait, irq, softirq, steal = map(
            int, Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9])
        return (user + nice + system + irq + softirq + steal) / _TICK
    except (OSError, ValueError):
        return None


class ChangelogStates(DictStates):
    """The baselines' contact states: a dict whose changes are also sent to a compacted Kafka topic, as
    the worker's Faust table does, so the baselines pay for the same durability. `changes()` hands over
    what was published since the last call; the caller sends it and waits for delivery before committing."""

    def __init__(self) -> None:
        super().__init__()
        self._changed: dict = {}

    async def publish(self, changed: dict[bytes, tuple[int, bytes]]) -> None:
        for key, (_partition, raw) in changed.items():
            self._changed[key] = raw

    def changes(self) -> dict:
        changed, self._changed = self._changed, {}
        return changed


async def create_changelog(settings, name: str) -> str:
    """A compacted topic `<prefix>.<name>-states`, partitioned like the events (deleted with the prefix)."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    topic = f"{settings.topic_prefix}.{name}-states"
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=settings.topic_partitions, replication_factor=1,
                                            topic_configs={"cleanup.policy": "compact"})])
    except TopicAlreadyExistsError:
        pass
    finally:
        await admin.close()
    return topic


class LagProbe:
    """Committed lag of one consumer group, with one long-lived consumer (cheap to poll)."""

    def __init__(self, bootstrap: str, group: str, topic: str):
        self.bootstrap, self.group, self.topic = bootstrap, group, topic
        self.consumer = None
        self.parts: list = []
        self.ends: dict = {}

    async def start(self) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        self.consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=self.group,
                                         enable_auto_commit=False)
        await self.consumer.start()
        parts = self.consumer.partitions_for_topic(self.topic)
        for _ in range(50):
            if parts:
                break
            await self.consumer._client.force_metadata_update()
            parts = self.consumer.partitions_for_topic(self.topic)
        self.parts = [TopicPartition(self.topic, p) for p in sorted(parts or [])]
        self.ends = await self.consumer.end_offsets(self.parts)

    async def lag(self) -> int:
        lag = 0
        for tp in self.parts:
            lag += max(self.ends[tp] - ((await self.consumer.committed(tp)) or 0), 0)
        return lag

    async def stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()


def count_rows(env: dict[str, str], timeout: float = 180) -> int:
    """`SELECT count() FROM {db}.event_log FINAL` in a fresh process (the writer must be stopped)."""
    out = subprocess.run([sys.executable, "-m", "autologs.cli", "sql", "--format", "json",
                          "SELECT count() AS n FROM {db}.event_log FINAL"],
                         env=env, capture_output=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"autologs sql failed: {out.stderr.decode()[-2000:]}")
    return int(json.loads(out.stdout.splitlines()[-1])["n"])


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
        """Rows written so far (the last answer kept when the page does not answer)."""
        health = self.health()
        if "rows_written" in health:
            self.rows = int(health["rows_written"])
        return self.rows

    def health(self) -> dict:
        """The process's /health figures (empty when it has no page or does not answer)."""
        if self.health_port is None:
            return {}
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/health", timeout=2) as r:
                return json.loads(r.read())
        except Exception:
            return {}

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


def run_child(name: str, module: str, args: list[str], env: dict[str, str], out: Path, timeout: float) -> dict:
    """`python -m module args --out out` in its own process (its own chdb engine), its stderr passed through;
    returns the JSON it wrote. Bounded by `timeout` (then killed)."""
    log(f"{name}: python -m {module} {' '.join(args)}")
    began = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", module, *args, "--out", str(out)], env=env, cwd=ROOT,
                            stdin=subprocess.DEVNULL, stdout=sys.stderr, stderr=sys.stderr)
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=30)
        raise RuntimeError(f"{name}: no result after {timeout:.0f}s (killed)")
    if code != 0:
        raise RuntimeError(f"{name}: python -m {module} exited with {code}")
    result = json.loads(out.read_text())
    result["process_s"] = round(time.monotonic() - began, 1)
    return result


def finish_child(out_path, result: dict, ch) -> dict:
    """End of a benchmark child process: its figures to the JSON file the parent reads, the engine closed."""
    with open(out_path, "w") as f:
        json.dump(result, f, indent=2)
    ch.close()
    return result
