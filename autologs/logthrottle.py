"""Keep a retry loop from flooding the worker's log.

With its broker gone, the Kafka client logs every reconnection attempt: measured, ~6,300 ERROR lines a
second (14 MB in 40 s of outage), enough to fill a disk over a long one. Each message template of the
throttled loggers is written at most once every `every_s` seconds; the next one written says how many
were left out. /health says that Kafka is unreachable (processors/agents.py, `watch_kafka`).
"""
from __future__ import annotations

import logging
import time


class Throttle(logging.Filter):
    def __init__(self, every_s: float = 10.0, monotonic=time.monotonic) -> None:
        super().__init__()
        self.every_s = every_s
        self._monotonic = monotonic
        self._seen: dict[tuple[str, str], tuple[float, int]] = {}  # (logger, template) -> (last written, left out)

    def filter(self, record: logging.LogRecord) -> bool:
        key, now = (record.name, str(record.msg)), self._monotonic()
        last, left_out = self._seen.get(key, (float("-inf"), 0))
        if now - last < self.every_s:
            self._seen[key] = (last, left_out + 1)
            return False
        if left_out:
            record.msg = f"{record.msg} [and {left_out} more like it in {now - last:.0f} s, not logged]"
        self._seen[key] = (now, 0)
        return True


def throttle(prefix: str = "aiokafka", every_s: float = 10.0) -> Throttle:
    """Throttle every logger under `prefix` that exists now (a module's logger exists once it is imported:
    call this after the imports). A logger's filter sees only its own records, hence one filter on each."""
    f = Throttle(every_s)
    for name in list(logging.root.manager.loggerDict):
        if name == prefix or name.startswith(prefix + "."):
            logging.getLogger(name).addFilter(f)
    return f
