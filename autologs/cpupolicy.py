"""CPU policy of the ingesting processes (worker, replay): the embedded engine's threads yield the cores.

Why: on a machine with few cores the worker's event-loop thread is the pipeline's critical path (it derives
every batch), and it waited for a core behind the engine's own threads (insert pipelines, background
merges), which have slack: a batch's inserts finish while the next one is derived. The engine's threads run
at a lower priority (`AUTOLOGS_ENGINE_NICE`), so they take what the event loop leaves. 1M events, alternating
on one machine: 43.9k and 43.3k -> 46.1k and 47.3k events/s (bench/HISTORY.md).

Only threads Python did not start are lowered: a Python thread holds the GIL in turns with the event loop,
and one preempted while holding it would stall the loop instead. Threads the engine starts later are lowered
when the next scan sees them (every `every_s` seconds). Linux only (/proc); elsewhere a no-op.
"""
from __future__ import annotations

import logging
import os
import threading
import time

log = logging.getLogger("autologs.cpu")

_installed: threading.Thread | None = None
lowered: set[int] = set()  # native thread ids given the lower priority


def lower_engine_threads(nice: int) -> int:
    """One scan: every thread of this process that Python did not start gets `nice`. Returns how many now."""
    python_threads = {t.native_id for t in threading.enumerate()}
    count = 0
    for name in os.listdir("/proc/self/task"):
        tid = int(name)
        if tid in lowered or tid in python_threads:
            continue
        try:
            os.setpriority(os.PRIO_PROCESS, tid, nice)
        except OSError:  # ended meanwhile
            continue
        lowered.add(tid)
        count += 1
    return count


def install(nice: int, every_s: float = 2.0) -> bool:
    """Apply the policy to this process (idempotent). Returns False when it is off (nice 0) or not on Linux."""
    global _installed
    if nice <= 0 or not os.path.isdir("/proc/self/task"):
        return False
    if _installed is not None:
        return True

    def run() -> None:
        while True:
            try:
                lower_engine_threads(nice)
            except OSError as exc:  # /proc unreadable: keep the defaults, say so once
                log.warning("cannot lower the engine's thread priority (%s); AUTOLOGS_ENGINE_NICE=0 turns this off", exc)
                return
            time.sleep(every_s)

    _installed = threading.Thread(target=run, name="autologs-cpu-policy", daemon=True)
    _installed.start()
    return True
