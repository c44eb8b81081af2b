"""A bounded hand-over of fetched messages, from the consumer loop to a batch agent, in bulk.

The consumer loop appends each message (no Event object, no decoding, no queue hop per message);
the agent takes up to `batch_rows` at a time, waiting at most `within` seconds after the first
one for a full batch. Full at `maxsize`: the consumer loop then waits (interruptibly, see
streams/faust_patches.py). It is never cleared on a rebalance: the agent drops what is stale.
"""
from __future__ import annotations

import asyncio
from collections import deque
from typing import Any


class BatchInbox:
    def __init__(self, maxsize: int, batch_rows: int):
        if maxsize < batch_rows:
            raise ValueError("the inbox must hold at least one batch")
        self.maxsize = maxsize
        self.batch_rows = batch_rows
        self._messages: deque = deque()
        self._arrived = asyncio.Event()
        self._batch_ready = asyncio.Event()
        self._space = asyncio.Event()
        self._space.set()

    def __len__(self) -> int:
        return len(self._messages)

    def full(self) -> bool:
        return len(self._messages) >= self.maxsize

    def put(self, message: Any) -> None:
        self._messages.append(message)
        n = len(self._messages)
        if n == 1:
            self._arrived.set()
        if n >= self.batch_rows:
            self._batch_ready.set()
        if n >= self.maxsize:
            self._space.clear()

    def put_many(self, messages: list) -> None:
        """A fetched partition's messages at once (may pass `maxsize` by one fetch: callers check `full`)."""
        self._messages.extend(messages)
        n = len(self._messages)
        if n:
            self._arrived.set()
        if n >= self.batch_rows:
            self._batch_ready.set()
        if n >= self.maxsize:
            self._space.clear()

    async def wait_space(self) -> None:
        await self._space.wait()

    def clear(self) -> None:
        self._messages.clear()
        self._update()

    async def take(self, within: float) -> list:
        """The next batch: `batch_rows` messages, or fewer once `within` s have passed since the first."""
        while not self._messages:
            await self._arrived.wait()
        if len(self._messages) < self.batch_rows:
            try:
                await asyncio.wait_for(self._batch_ready.wait(), within)
            except asyncio.TimeoutError:
                pass
        pop = self._messages.popleft
        batch = [pop() for _ in range(min(len(self._messages), self.batch_rows))]
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
