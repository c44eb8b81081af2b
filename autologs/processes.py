"""Background worker started by the demo: a pid file in the data dir, so `make stop` stops only it."""
from __future__ import annotations

import contextlib
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
        with urllib.request.urlopen(f"{settings.web_url}/health", timeout=timeout) as r:
            return json.loads(r.read())
    except Exception:
        return None


def worker_holding(settings: Settings) -> dict | None:
    """The /health of the worker holding this data dir's embedded engine, or None: none answers on the web
    port, or the one that does belongs to another data dir (and holds nothing of ours)."""
    if not settings.embedded:
        return None
    health = worker_health(settings)
    ours = str(settings.data_dir.resolve())
    return health if health is not None and health.get("data_dir", ours) == ours else None


def running_elsewhere(settings: Settings) -> dict | None:
    """The /health of a worker that serves this web port but was not started in the background (a foreground
    `autologs worker`), or None. Raises when that worker uses another data dir."""
    health = worker_health(settings)
    if health is None or worker_pid(settings) is not None:
        return None
    ours = str(settings.data_dir.resolve())
    if health.get("data_dir", ours) != ours:
        raise RuntimeError(f"port {settings.web_port} is served by a worker of another data dir "
                           f"({health['data_dir']}): set AUTOLOGS_WEB_PORT to another port, or stop that worker")
    return health


def start_worker(settings: Settings, wait_s: float = 90.0) -> int:
    """Start `autologs worker` in the background (idempotent); wait until its web server answers. A worker
    already running on this data dir in the foreground is used as it is (a second one could not open the data)."""
    elsewhere = running_elsewhere(settings)
    if elsewhere is not None:
        return int(elsewhere.get("pid", 0))
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
    """Stop the background worker, or one running on this data dir in the foreground (before the broker goes:
    a worker left without its broker retries for a long while before it can stop)."""
    pid = worker_pid(settings)
    if pid is None:
        worker_pid_file(settings).unlink(missing_ok=True)
        try:
            elsewhere = running_elsewhere(settings)
        except RuntimeError:  # another data dir's worker: not ours to stop
            return False
        if not elsewhere or not elsewhere.get("pid"):
            return False
        _terminate(int(elsewhere["pid"]), timeout_s, lambda p: _alive(p))
        return True
    _terminate(pid, timeout_s, lambda p: worker_pid(settings) == p)
    worker_pid_file(settings).unlink(missing_ok=True)
    return True


def _alive(pid: int) -> bool:
    """Running: a process that has exited but not been reaped by its parent (a zombie) is not."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _terminate(pid: int, timeout_s: float, running) -> None:
    """SIGTERM, then SIGKILL if it is still `running(pid)` after `timeout_s`."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and running(pid):
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.2)
    if running(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def worker_post(settings: Settings, path: str, body: dict | None, timeout: float = 60.0) -> dict:
    """POST JSON (or GET, without `body`) to one of the running worker's /admin pages with the local admin key;
    its refusal is raised as a RuntimeError carrying the worker's reason. A worker that does not answer
    raises OSError (URLError, a reset connection)."""
    from autologs.admin import HEADER, read_admin_key

    key = read_admin_key(settings)
    if key is None:
        raise RuntimeError(f"no admin key in {settings.data_dir}; is the worker running with this data dir?")
    req = urllib.request.Request(f"{settings.web_url}{path}", method="GET" if body is None else "POST",
                                 data=None if body is None else json.dumps(body, default=str).encode(),
                                 headers={HEADER: key, "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as exc:
        raise RuntimeError(json.loads(exc.read() or b"{}").get("error", str(exc))) from None


def worker_get(settings: Settings, path: str, timeout: float = 60.0) -> dict:
    return worker_post(settings, path, None, timeout)


def worker_query(settings: Settings, query: str, parameters: dict | None = None,
                 timeout: float = 60.0) -> tuple[list[str], list[list]]:
    """Run a read-only query through the running worker (which holds the embedded ClickHouse)."""
    body = worker_post(settings, "/admin/sql", {"query": query, "parameters": parameters}, timeout)
    return body["columns"], body["rows"]


def read_query(settings: Settings, query: str, parameters: dict | None = None) -> tuple[list[str], list[list]]:
    """A read-only query: through the worker when it holds the embedded engine, else directly."""
    from autologs.clickhouse import ClickHouse, QueryRefused, refuse_unless_read

    refused = refuse_unless_read(query)
    if refused:
        raise QueryRefused(refused)
    if worker_holding(settings) is not None:
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
    url = f"{settings.web_url}/api/v1/{path}?{urlencode(params)}"
    req = urllib.request.Request(url, headers={HEADER: key})
    try:
        return urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as exc:
        raise RuntimeError(json.loads(exc.read() or b"{}").get("error", str(exc))) from None
