"""Experiment only: faust's Consumer._drain_messages without one `wait_first` (two tasks + asyncio.wait)
per message. Upstream awaits `wait_first(callback(message), suspend_flow.wait())` for EVERY message so
that a rebalance can interrupt a callback blocked on a full stream buffer. Here the callback is awaited
directly while the flow is not suspended (the common case); the upstream path is kept when it is.
NOT rebalance-safe as is (a callback already blocked on a full buffer is not interrupted): it measures
what the per-message wait_first costs. Imported by agents_fast when BENCH_DRAIN=fast.
"""
from __future__ import annotations

import asyncio
from typing import AsyncIterator, cast

from faust.transport import consumer as fc
from mode import Service


async def _drain_messages(self, fetcher) -> None:  # pragma: no cover - mirrors faust 0.15.3
    callback = self.callback
    getmany = self.getmany
    consumer_should_stop = cast(Service, self)._stopped.is_set
    fetcher_should_stop = cast(Service, fetcher)._stopped.is_set
    get_read_offset = self._read_offset.__getitem__
    set_read_offset = self._read_offset.__setitem__
    set_flag, unset_flag = self.diag.set_flag, self.diag.unset_flag
    commit_every = self._commit_every
    acks_enabled_for = self.app.topics.acks_enabled_for
    suspended = self.suspend_flow.is_set
    num_since_yield = 0
    try:
        while not (consumer_should_stop() or fetcher_should_stop()):
            set_flag(fc.CONSUMER_FETCHING)
            ait = cast(AsyncIterator, getmany(timeout=1.0))
            await self.sleep(0)
            if not self.should_stop:
                async for tp, message in ait:
                    num_since_yield += 1
                    if num_since_yield > 100:
                        await asyncio.sleep(0)
                        num_since_yield = 0
                    offset = message.offset
                    r_offset = get_read_offset(tp)
                    if r_offset is None or offset >= r_offset:
                        gap = offset - (r_offset or 0)
                        if gap > 1 and r_offset and acks_enabled_for(message.topic):
                            await self._add_gap(tp, r_offset + 1, offset)
                        if commit_every is not None and self._n_acked >= commit_every:
                            self._n_acked = 0
                            await self.commit()
                        if suspended():
                            await self.wait_first(callback(message), self.suspend_flow.wait())
                        else:
                            await callback(message)
                        set_read_offset(tp, offset)
                unset_flag(fc.CONSUMER_FETCHING)
    except self.consumer_stopped_errors:
        if self.transport.app.should_stop:
            return
        raise
    except asyncio.CancelledError:
        if self.transport.app.should_stop:
            return
        raise


def install() -> None:
    fc.Consumer._drain_messages = _drain_messages
