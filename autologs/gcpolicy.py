"""Garbage-collection policy of the long-running ingesting processes (worker, replay).

Why: CPython's automatic collector runs every 700 net allocations, and its older generations walk
every tracked object. A worker holds hundreds of thousands of them (fetched events waiting in the
stream buffer, held events, the contact-state table), and allocates several per event, so the
collector was measured at about half of the worker's CPU (bench/README.md: 7.4k -> 11.4k events/s
on the same run with it off). Almost nothing an event allocates is cyclic: reference counting frees it.

So: freeze what startup created (never scanned again), turn the automatic collector off, and collect
every `gc_interval_s` seconds from a daemon thread, which bounds what cycles can hold to what
accumulates in that interval. `gc_interval_s = 0` keeps Python's default behaviour.
"""
from __future__ import annotations

import gc
import logging
import threading
import time
from dataclasses import dataclass

log = logging.getLogger("autologs.gc")


@dataclass
class GcStats:
    collections: int = 0
    collected: int = 0
    seconds: float = 0.0
    longest_s: float = 0.0


stats = GcStats()
_installed: threading.Thread | None = None


def collect_once() -> int:
    t = time.perf_counter()
    found = gc.collect()
    took = time.perf_counter() - t
    stats.collections += 1
    stats.collected += found
    stats.seconds += took
    stats.longest_s = max(stats.longest_s, took)
    if took > 0.5:
        log.warning("a garbage collection took %.2f s (%d objects freed)", took, found)
    return found


def install(interval_s: float) -> bool:
    """Apply the policy to this process (idempotent). Returns False when it keeps Python's default."""
    global _installed
    if interval_s <= 0:
        return False
    if _installed is not None:
        return True
    gc.collect()
    gc.freeze()  # startup's modules, classes and settings: never scanned again
    gc.disable()

    def run() -> None:
        while True:
            time.sleep(interval_s)
            collect_once()

    _installed = threading.Thread(target=run, name="gc-collector", daemon=True)
    _installed.start()
    return True
