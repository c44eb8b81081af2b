"""Background worker started by the demo: a pid file in the data dir, so `make stop` stops only it."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import orjson
from pathlib import Path

from autologs.config import Settings


def worker_pid_file(settings: Settings) -> Path:
    return settings.data_dir.resolve() / "worker.pid"


def worker_pid(settings: Settings) -> int | None:
    try:
        pid = int(worker_pid_file(settings).read_text())
        os.kill(pid, 0)
        return pid
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return None


def worker_health(settings: Settings, timeout: float = 2.0) -> dict | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{settings.web_port}/health", timeout=timeout) as r:
            return json.loads(r.read())
    except Exception:
        return None


def start_worker(settings: Settings, wait_s: float = 90.0) -> int:
    """Start `autologs worker` in the background (idempotent); wait until its web server answers."""
    pid = worker_pid(settings)
    if pid is None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(settings.data_dir / "worker.log", "ab")
        proc = subprocess.Popen([sys.executable, "-m", "autologs.cli", "worker"], stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        pid = proc.pid
        worker_pid_file(settings).write_text(str(pid))
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if worker_pid(settings) is None:
            raise RuntimeError(f"the worker exited; see {settings.data_dir / 'worker.log'}")
        if worker_health(settings) is not None:
            return pid
        time.sleep(0.3)
    raise RuntimeError(f"the worker did not answer within {wait_s:.0f}s; see {settings.data_dir / 'worker.log'}")


def stop_worker(settings: Settings, timeout_s: float = 60.0) -> bool:
    pid = worker_pid(settings)
    if pid is None:
        worker_pid_file(settings).unlink(missing_ok=True)
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and worker_pid(settings) == pid:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.2)
    if worker_pid(settings) == pid:
        os.kill(pid, signal.SIGKILL)
    worker_pid_file(settings).unlink(missing_ok=True)
    return True


def worker_post(settings: Settings, path: str, body: dict, timeout: float = 60.0) -> dict:
    """POST JSON to one of the running worker's /admin pages with the local admin key; its refusal is raised
    as a RuntimeError carrying the worker's reason."""
    from autologs.admin import HEADER, read_admin_key

    key = read_admin_key(settings)
    if key is None:
        raise RuntimeError(f"no admin key in {settings.data_dir}; is the worker running with this data dir?")
    req = urllib.request.Request(f"http://127.0.0.1:{settings.web_port}{path}", method="POST",
                                 data=json.dumps(body, default=str).encode(),
                                 headers={HEADER: key, "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as exc:
        raise RuntimeError(json.loads(exc.read() or b"{}").get("error", str(exc))) from None


def worker_query(settings: Settings, query: str, parameters: dict | None = None,
                 timeout: float = 60.0) -> tuple[list[str], list[list]]:
    """Run a read-only query through the running worker (which holds the embedded ClickHouse)."""
    body = worker_post(settings, "/admin/sql", {"query": query, "parameters": parameters}, timeout)
    return body["columns"], body["rows"]


def read_query(settings: Settings, query: str, parameters: dict | None = None) -> tuple[list[str], list[list]]:
    """A read-only query: through the worker when it holds the embedded engine, else directly."""
    from autologs.clickhouse import ClickHouse, refuse_unless_read

    refused = refuse_unless_read(query)
    if refused:
        raise ValueError(refused)
    if settings.embedded and worker_health(settings) is not None:
        return worker_query(settings, query, parameters)
    result = ClickHouse(settings).query(query, parameters, settings={"readonly": 2})
    # The same values as through the worker's JSON (dates as ISO 8601), whichever way the query went.
    return list(result.column_names), orjson.loads(orjson.dumps([list(r) for r in result.result_rows], default=str))


def worker_api(settings: Settings, path: str, params: dict[str, str], timeout: float = 120.0):
    """Open GET /api/v1/<path> on the running worker with the local admin key (acting for an account)."""
    from urllib.parse import urlencode

    from autologs.admin import HEADER, read_admin_key

    key = read_admin_key(settings)
    if key is None:
        raise RuntimeError(f"no admin key in {settings.data_dir}; is the worker running with this data dir?")
    url = f"http://127.0.0.1:{settings.web_port}/api/v1/{path}?{urlencode(params)}"
    req = urllib.request.Request(url, headers={HEADER: key})
    try:
        return urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as exc:
        raise RuntimeError(json.loads(exc.read() or b"{}").get("error", str(exc))) from None
