"""Shared helpers of the benchmark harness: environments, progress lines, lag polling, counting rows."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

BENCH_DB = "bench"


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


def emit(**fields) -> None:
    """One JSON line on stdout: how the benchmarked processes report to bench.run."""
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


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
