"""Hold events briefly so that each contact's events are applied in event-time order.

Per partition, the watermark is the newest event time seen (never ahead of the wall clock). An event
is released once the watermark is more than `lateness` past it, or when its partition has been quiet
for `idle_s`: an event that arrives late by less than `lateness` is still applied in its place.
Held events are not acknowledged, so a crash re-delivers them; nothing held is lost.

What the watermark releases is decided per event, as it arrives, never per batch: the same messages give
the same order of release however they were fetched, so a replay of the same topics derives the same rows
(an event later than the lateness is applied after what its arrival found released, whichever batch brought
it).
"""
from __future__ import annotations

import heapq
import itertools
import time
from typing import Any, Callable


class ReorderBuffer:
    def __init__(self, lateness_ms: int, idle_s: float, monotonic: Callable[[], float] = time.monotonic,
                 wall_ms: Callable[[], int] = lambda: int(time.time() * 1000)):
        self.lateness_ms = lateness_ms
        self.idle_s = idle_s
        self._monotonic = monotonic
        self._wall_ms = wall_ms
        self._heaps: dict[int, list] = {}
        # Released by the watermark as events arrived, in release order, until `release` hands them over
        self._released: dict[int, list] = {}
        self._watermark: dict[int, int] = {}
        self._last_arrival: dict[int, float] = {}
        # When each partition's newest events were fetched, if the caller says (else: when they were added). The
        # idle release counts the quiet from it: a worker busy with a backlog is not a stream gone quiet, but a
        # stream it has read to the end is quiet from its last fetch, not from when the worker got to it.
        self._fetched: dict[int, float] = {}
        self._seq = itertools.count()

    def __len__(self) -> int:
        return sum(len(h) for h in self._heaps.values()) + sum(len(r) for r in self._released.values())

    def add(self, partition: int, t_ms: int, event_id: str, item: Any) -> None:
        self.add_many([(partition, t_ms, event_id, item)])

    def add_many(self, entries: list[tuple[int, int, str, Any]], fetched_at: float | None = None) -> None:
        """(partition, event time, event_id, item) of one batch, in arrival order: the clocks are read once.
        `fetched_at`: when the newest of them was fetched (this buffer's monotonic clock), for `release_idle`."""
        wall, now, seq, push, pop = self._wall_ms(), self._monotonic(), self._seq, heapq.heappush, heapq.heappop
        heaps, watermark, arrived, released = self._heaps, self._watermark, self._last_arrival, self._released
        lateness = self.lateness_ms
        for partition, t_ms, event_id, item in entries:
            heap = heaps.get(partition)
            if heap is None:
                heap = heaps[partition] = []
            push(heap, (t_ms, event_id, next(seq), item))
            mark = watermark.get(partition, 0)
            if t_ms > mark:
                mark = watermark[partition] = min(t_ms, wall)
            if heap[0][0] < mark - lateness:  # what this arrival releases (a late event: itself)
                out = released.get(partition)
                if out is None:
                    out = released[partition] = []
                while heap and heap[0][0] < mark - lateness:
                    out.append(pop(heap)[3])
            arrived[partition] = now
        fetched = now if fetched_at is None else fetched_at
        for partition in {e[0] for e in entries}:
            self._fetched[partition] = fetched

    def partitions(self) -> list[int]:
        return [p for p, h in self._heaps.items() if h] + [p for p, r in self._released.items()
                                                              if r and not self._heaps.get(p)]

    def items(self) -> list[tuple[int, Any]]:
        """Everything held, with its partition (for a checkpoint)."""
        return [(p, item) for p, out in self._released.items() for item in out] + \
            [(p, e[3]) for p, heap in self._heaps.items() for e in sorted(heap)]

    def release(self, partition: int, force: bool = False) -> list[Any]:
        """Items of `partition` that can no longer be overtaken: what the watermark released as events arrived,
        in that order, and, from a quiet partition (or `force`), everything held, in (event time, event_id)
        order."""
        out = self._released.pop(partition, [])
        heap = self._heaps.get(partition)
        if heap and (force or self._monotonic() - self._last_arrival.get(partition, 0.0) >= self.idle_s):
            out.extend(heapq.heappop(heap)[3] for _ in range(len(heap)))
        return out

    def release_idle(self, caught_up: Callable[[int, float], bool] | None = None) -> list[Any]:
        """Everything held by partitions quiet for `idle_s` since their newest events were fetched (see
        `add_many`). Busy partitions are left to `release`, called as their events arrive: a timer releasing
        them too would only compete with the batches. `caught_up(partition, quiet_for_s)` tells a quiet stream
        from a stalled fetch (a broker outage), and, with `fetched_at`, says whether everything fetched of the
        partition has been added: only a partition the broker says has nothing more is quiet."""
        now = self._monotonic()
        quiet = [p for p, heap in self._heaps.items() if heap and now - self._fetched.get(p, 0.0) >= self.idle_s
                 and (caught_up is None or caught_up(p, now - self._fetched.get(p, 0.0)))]
        return [item for p in quiet for item in self.release(p, force=True)]

    def take_contact(self, partition: int, belongs: Callable[[Any], bool], up_to_ms: int) -> list[Any]:
        """Items of one contact up to a time, out of turn: a removal is a barrier applied at once."""
        heap = self._heaps.get(partition, [])
        taken = sorted(e for e in heap if e[0] <= up_to_ms and belongs(e[3]))
        if taken:
            ids = {e[2] for e in taken}
            heap[:] = [e for e in heap if e[2] not in ids]
            heapq.heapify(heap)
        return [e[3] for e in taken]

    def drop_partitions(self, partitions: set[int]) -> int:
        """On revocation: forget what is held; those events are unacknowledged and will be re-delivered."""
        dropped = 0
        for p in partitions:
            dropped += len(self._heaps.pop(p, [])) + len(self._released.pop(p, []))
            self._watermark.pop(p, None)
            self._last_arrival.pop(p, None)
            self._fetched.pop(p, None)
        return dropped
