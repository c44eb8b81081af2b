"""One measured patch of faust-streaming's consumer loop (see bench/README.md and the README).

Upstream delivers every message with `wait_first(callback(message), suspend_flow.wait())`: two tasks
and an `asyncio.wait` per message, so that a rebalance can interrupt a delivery blocked on a full
stream buffer. Profiled here it was the largest single cost of the worker (about 46 µs of ~130 µs
per event). This copy of `_drain_messages` (faust-streaming 0.15) awaits the delivery directly when it
cannot block — flow not suspended, no full stream buffer for the partition, producer buffer not over
its limit — and keeps upstream's interruptible path otherwise, so a rebalance is never stuck behind a
blocked delivery. Applied only to the faust-streaming versions it was copied from.
"""
from __future__ import annotations

import asyncio
import logging
from typing import AsyncIterator, cast

import faust
from faust.transport import consumer as fc
from mode import Service

log = logging.getLogger("autologs.faust_patches")
PATCHED_SERIES = "0.15."
_installed = False


def _may_block(consumer, tp) -> bool:
    """True when delivering to `tp` could wait (and so must stay interruptible by a rebalance)."""
    if consumer.suspend_flow.is_set() or not consumer.app.flow_control.is_active():
        return True
    buffer = consumer.app.producer.buffer
    if buffer.size > buffer.max_messages:
        return True
    return any(chan.queue.full() for chan in consumer.app.topics._tp_index.get(tp, ()))


async def _drain_messages(self, fetcher) -> None:  # pragma: no cover - mirrors faust-streaming 0.15
    callback = self.callback
    getmany = self.getmany
    consumer_should_stop = cast(Service, self)._stopped.is_set
    fetcher_should_stop = cast(Service, fetcher)._stopped.is_set
    get_read_offset = self._read_offset.__getitem__
    set_read_offset = self._read_offset.__setitem__
    set_flag, unset_flag = self.diag.set_flag, self.diag.unset_flag
    commit_every = self._commit_every
    acks_enabled_for = self.app.topics.acks_enabled_for
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
                        if _may_block(self, tp):
                            await self.wait_first(callback(message), self.suspend_flow.wait())
                        else:
                            await callback(message)  # cannot block: no need for two tasks per message
                        set_read_offset(tp, offset)
                unset_flag(fc.CONSUMER_FETCHING)
    except self.consumer_stopped_errors:
        if self.transport.app.should_stop:
            self.log.info("Broker stopped consumer, shutting down...")
            return
        raise
    except asyncio.CancelledError:
        if self.transport.app.should_stop:
            self.log.info("Consumer shutting down for user cancel.")
            return
        raise


def install() -> bool:
    """Patch the consumer loop if this is the faust-streaming series the copy came from."""
    global _installed
    if _installed:
        return True
    if not faust.__version__.startswith(PATCHED_SERIES):
        log.warning("faust-streaming %s: consumer loop left as upstream (patch made for %sx)", faust.__version__,
                    PATCHED_SERIES)
        return False
    fc.Consumer._drain_messages = _drain_messages
    _installed = True
    log.info("faust-streaming %s: consumer loop patched (no per-message wait_first when delivery cannot block)",
             faust.__version__)
    return True
