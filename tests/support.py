"""Helpers for integration tests: a real worker in a subprocess, reads of its embedded ClickHouse."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import orjson


# The installed console script, run from outside the repository: what a user runs (a module that is
# importable only from the repository's folder fails here).
AUTOLOGS = str(Path(sys.executable).parent / "autologs")
OUTSIDE = Path(tempfile.gettempdir())


def run_cli(env: dict, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([AUTOLOGS, *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=OUTSIDE)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class WorkerProcess:
    """`autologs worker` in its own process, with its own data dir (chdb allows one process per path)."""

    def __init__(self, data_dir: Path, topic_prefix: str, **extra_env: str):
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.env = {
            **os.environ,
            "AUTOLOGS_DATA_DIR": str(self.data_dir),
            "AUTOLOGS_TOPIC_PREFIX": topic_prefix,
            "AUTOLOGS_WEB_PORT": str(self.port),
            **extra_env,
        }
        self.log_path = self.data_dir / "worker.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60.0) -> "WorkerProcess":
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([AUTOLOGS, "worker"], env=self.env, cwd=OUTSIDE,
                                     stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.wait_ready(timeout)
        return self

    def health(self) -> dict | None:
        try:
            host = self.env.get("AUTOLOGS_WEB_HOST", "127.0.0.1")
            with urllib.request.urlopen(f"http://{host}:{self.port}/health", timeout=2) as r:
                return json.loads(r.read())
        except Exception:
            return None

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"worker exited with {self.proc.returncode}:\n{self.log_tail()}")
            if self.health() is not None:
                return
            time.sleep(0.3)
        raise AssertionError(f"worker not ready in {timeout}s:\n{self.log_tail()}")

    def wait_until(self, predicate, timeout: float = 120.0, what: str = "condition") -> dict:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"worker exited with {self.proc.returncode}:\n{self.log_tail()}")
            last = self.health()
            if last is not None and predicate(last):
                return last
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}; last health {last}\n{self.log_tail()}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        self.proc.wait(timeout=60)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except FileNotFoundError:
            return ""

    def sql(self, query: str) -> list[dict]:
        """Read the worker's ClickHouse from a fresh process (the worker must be stopped first)."""
        assert self.proc is None or self.proc.poll() is not None, "stop the worker before reading its chdb"
        out = run_cli(self.env, "sql", "--format", "json", query)
        if out.returncode != 0:
            raise AssertionError(f"autologs sql failed: {out.stderr}")
        return [orjson.loads(line) for line in out.stdout.splitlines() if line.strip()]
