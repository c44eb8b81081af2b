"""A bounded hand-over of fetched messages, from the consumer loop to a batch agent, in bulk.

The consumer loop appends each message (no Event object, no decoding, no queue hop per message);
the agent takes up to `batch_rows` at a time, waiting for a full batch at most until `within` seconds
after the oldest message waiting arrived. Full at `maxsize`: the consumer loop then waits (interruptibly, see
streams/faust_patches.py). It is never cleared on a rebalance: the agent drops what is stale.
"""
from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any


class BatchInbox:
    def __init__(self, maxsize: int, batch_rows: int):
        if maxsize < batch_rows:
            raise ValueError("the inbox must hold at least one batch")
        self.maxsize = maxsize
        self.batch_rows = batch_rows
        self._messages: deque = deque()
        # [arrival time, messages of that arrival still here], oldest first: one entry per put, not per message
        self._arrivals: deque[list] = deque()
        self._arrived = asyncio.Event()
        self._batch_ready = asyncio.Event()
        self._space = asyncio.Event()
        self._space.set()
        self.taken_fetched_at = 0.0  # when the newest message of the last batch taken was put (time.monotonic())
        self._last_offsets: dict[Any, int] = {}  # per `tp`: the offset of the newest message put (`put_many`)

    def __len__(self) -> int:
        return len(self._messages)

    def full(self) -> bool:
        return len(self._messages) >= self.maxsize

    def put(self, message: Any) -> None:
        self._messages.append(message)
        self._arrivals.append([time.monotonic(), 1])
        n = len(self._messages)
        if n == 1:
            self._arrived.set()
        if n >= self.batch_rows:
            self._batch_ready.set()
        if n >= self.maxsize:
            self._space.clear()

    def put_many(self, messages: list) -> None:
        """A fetched partition's messages at once (may pass `maxsize` by one fetch: callers check `full`)."""
        if not messages:
            return
        self._messages.extend(messages)
        last = messages[-1]
        if hasattr(last, "tp"):
            self._last_offsets[last.tp] = last.offset
        self._arrivals.append([time.monotonic(), len(messages)])
        n = len(self._messages)
        self._arrived.set()
        if n >= self.batch_rows:
            self._batch_ready.set()
        if n >= self.maxsize:
            self._space.clear()

    def last_offset(self, tp: Any) -> int | None:
        """The offset of the newest message of `tp` put here (its messages come from one partition fetch each)."""
        return self._last_offsets.get(tp)

    async def wait_space(self) -> None:
        await self._space.wait()

    async def take(self, within: float) -> list:
        """The next batch: `batch_rows` messages, or, when fewer are there, what is there once the oldest of them
        has waited `within` s. Counted from its arrival, not from this call: messages that came while the
        previous batch was being derived have waited that long already."""
        while not self._messages:
            await self._arrived.wait()
        if len(self._messages) < self.batch_rows:
            left = self._arrivals[0][0] + within - time.monotonic()
            if left > 0:
                try:
                    await asyncio.wait_for(self._batch_ready.wait(), left)
                except asyncio.TimeoutError:
                    pass
        pop = self._messages.popleft
        n = min(len(self._messages), self.batch_rows)
        batch = [pop() for _ in range(n)]
        arrivals = self._arrivals
        while n:
            oldest = arrivals[0]
            self.taken_fetched_at = oldest[0]
            if oldest[1] <= n:
                n -= oldest[1]
                arrivals.popleft()
            else:
                oldest[1] -= n
                n = 0
        self._update()
        return batch

    def _update(self) -> None:
        n = len(self._messages)
        if not n:
            self._arrived.clear()
        if n < self.batch_rows:
            self._batch_ready.clear()
        if n < self.maxsize:
            self._space.set()


class InOrderAcks:
    """Acknowledge each partition's messages in offset order: a message is handed to Faust's acks only once
    every message delivered before it in its partition is finished too.

    Why: the pipeline finishes messages out of offset order (the reorder buffer releases events by event
    time, dead letters go at once), and Faust commits the acknowledged offsets up to the first gap it sees
    but not a gap at their head (faust-streaming 0.15 `Consumer._new_offset`: off by one once an offset is
    committed, unchecked before the first commit). Offset k+1 acknowledged while k was still held let a
    commit pass k, and a crash then lost k's scenario-log rows and state (found in review).

    Messages must be delivered in their partition's offset order (as fetched) and carry `tp`; `finished`
    marks them on the message itself (InboxMessage's `finished` slot), so nothing is kept per message
    beyond the queue of its partition.
    """

    def __init__(self) -> None:
        self._pending: dict[Any, deque] = {}

    def __len__(self) -> int:
        return sum(len(q) for q in self._pending.values())

    def delivered(self, messages: list) -> None:
        pending = self._pending
        for m in messages:
            q = pending.get(m.tp)
            if q is None:
                q = pending[m.tp] = deque()
            q.append(m)

    def finished(self, messages: list) -> list:
        """Mark `messages` finished; returns those that may be acknowledged now, in offset order."""
        touched = set()
        for m in messages:
            m.finished = True
            touched.add(m.tp)
        ready = []
        for tp in touched:
            q = self._pending.get(tp)
            while q and getattr(q[0], "finished", False):
                ready.append(q.popleft())
        return ready

    def forget(self, tps) -> int:
        """Revoked partitions: what they had pending is read again by their next owner, never acknowledged."""
        return sum(len(self._pending.pop(tp, ())) for tp in tps)
