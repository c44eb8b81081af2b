"""Two measured patches of faust-streaming's consumer loop (see bench/README.md and the README).

1. Batch delivery. Topics registered with `deliver_in_batches` skip the conductor: each fetched
   message is appended to a `BatchInbox` that a batch agent empties (processors/agents.py). Upstream
   turns every message into an Event, puts it on a queue, and the stream takes it off again with an
   event-loop turn and sensors per message; measured here that was about a third of the worker's CPU.
   Subscription, assignment, acknowledgements and commits stay Faust's: the agent tracks and acks the
   messages themselves (`Consumer.track_message` / `Consumer.ack`).
2. Upstream delivers every other message with `wait_first(callback(message), suspend_flow.wait())`:
   two tasks and an `asyncio.wait` per message, so that a rebalance can interrupt a delivery blocked on
   a full stream buffer. This copy awaits the delivery directly when it cannot block, and keeps the
   interruptible path otherwise (a full inbox or stream buffer, suspended flow, a producer over its
   buffer), so a rebalance is never stuck behind a blocked delivery.

3. The fetch wait. faust-streaming hard-codes `fetch_max_wait_ms=1500` for the worker's consumer.
   Measured here with a steady 6k events/s, fetches then came back in clumps about 1.5 s apart, so
   the oldest event of a batch was 2 s old before the agent saw it (freshness p99 2.5 s). The worker's
   consumer gets `FETCH_MAX_WAIT_MS` instead.

4. Messages fetched before a seek are not delivered after it (see `_reread`).

This copy of `_drain_messages` is faust-streaming 0.15's; `install` refuses any other series.
"""
from __future__ import annotations

import asyncio
import logging
from typing import AsyncIterator, cast

import faust
from faust.transport import consumer as fc
from faust.transport.drivers import aiokafka as aiokafka_driver
from mode import Service

from streams.inbox import BatchInbox

log = logging.getLogger("autologs.faust_patches")
PATCHED_SERIES = "0.15."
FETCH_MAX_WAIT_MS = 100
_installed = False


_inboxes: dict[str, BatchInbox] = {}


def deliver_in_batches(app: faust.App, channel, inbox: BatchInbox) -> None:
    """Messages of `channel`'s topics go straight into `inbox`, not through the conductor.

    The conductor keeps the subscription (so assignment, acks and commits work as for any agent's
    topic); the consumer loop just never calls its per-message callback for these topics.
    """
    if not _installed:
        raise RuntimeError("batch delivery needs the patched consumer loop: call streams.faust_patches.install() "
                           "before the worker starts")
    app.topics.add(channel)
    # Not handed to Faust's flow control to be cleared on a rebalance, as stream buffers are: Faust clears
    # them when it resumes, after seeking to the committed offsets, so what was fetched in between was
    # dropped and never read again (measured: a restarted worker sometimes left messages unconsumed).
    # The agent drops what is stale instead (processors/agents.py, take_batches).
    for name in channel.topics:
        _inboxes[name] = inbox


async def _reread(consumer, partitions: set) -> None:
    """Partitions whose fetched messages a seek overtook go back to their committed offset.

    Faust seeks to the committed offsets after a rebalance or a recovery while the consumer loop may
    still hold messages fetched before; delivering them would move the read offset past the seek and
    the re-fetched messages would then be skipped, leaving a gap that no commit passes (measured: a
    worker joining mid-stream left a partition uncommitted). They are not delivered, and the partition
    is re-read from its committed offset: at worst some messages twice, which the exactly-once tables
    absorb.
    """
    for tp in partitions:
        committed = consumer._committed_offset.get(tp)
        await consumer.seek(tp, committed if committed is not None else 0)


def _count_seeks(perform_seek):
    async def counted(self) -> None:
        self._autologs_seeks += 1
        try:
            await perform_seek(self)
        finally:
            self._autologs_seeks += 1
    return counted


async def _room(inbox: BatchInbox, flow_control) -> None:
    await flow_control.acquire()
    await inbox.wait_space()


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
    inbox_of = _inboxes.get
    flow_control = self.app.flow_control
    producer_buffer = self.app.producer.buffer
    num_since_yield = 0
    try:
        while not (consumer_should_stop() or fetcher_should_stop()):
            set_flag(fc.CONSUMER_FETCHING)
            seeks_at_fetch = self._autologs_seeks
            reread: set = set()
            ait = cast(AsyncIterator, getmany(timeout=1.0))
            await self.sleep(0)
            if not self.should_stop:
                async for tp, message in ait:
                    num_since_yield += 1
                    if num_since_yield > 100:
                        await asyncio.sleep(0)
                        num_since_yield = 0
                        if producer_buffer.size > producer_buffer.max_messages:  # the conductor's ebb, per 100
                            await self.wait_first(producer_buffer.wait_until_ebb(), self.suspend_flow.wait())
                    offset = message.offset
                    inbox = inbox_of(message.topic)
                    if inbox is not None and self._autologs_seeks != seeks_at_fetch:
                        reread.add(tp)  # fetched before a seek (before its read offset and gap checks too)
                        continue
                    r_offset = get_read_offset(tp)
                    if r_offset is None or offset >= r_offset:
                        gap = offset - (r_offset or 0)
                        if gap > 1 and r_offset and acks_enabled_for(message.topic):
                            await self._add_gap(tp, r_offset + 1, offset)
                        if commit_every is not None and self._n_acked >= commit_every:
                            self._n_acked = 0
                            await self.commit()
                        if inbox is not None:
                            if inbox.full() or not flow_control.is_active():
                                await self.wait_first(_room(inbox, flow_control), self.suspend_flow.wait())
                                if self._autologs_seeks != seeks_at_fetch:
                                    reread.add(tp)
                                    continue
                            if not inbox.full() and flow_control.is_active():  # else: a rebalance came first
                                inbox.put(message)
                        elif _may_block(self, tp):
                            await self.wait_first(callback(message), self.suspend_flow.wait())
                        else:
                            await callback(message)  # cannot block: no need for two tasks per message
                        set_read_offset(tp, offset)
                if reread:
                    await _reread(self, reread)
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


def install() -> None:
    """Patch the consumer loop; refuses any faust-streaming series other than the one it was copied from."""
    global _installed
    if _installed:
        return
    if not faust.__version__.startswith(PATCHED_SERIES):
        raise RuntimeError(f"faust-streaming {faust.__version__} is installed; autologs needs {PATCHED_SERIES}x "
                           "(its consumer loop is patched): pip install 'faust-streaming>=0.15,<0.16'")
    fc.Consumer._drain_messages = _drain_messages
    fc.Consumer._autologs_seeks = 0  # perform_seek calls so far (twice each: started, done)
    fc.Consumer.perform_seek = _count_seeks(fc.Consumer.perform_seek)
    create = aiokafka_driver.AIOKafkaConsumerThread._create_worker_consumer

    def _create_worker_consumer(self, *args, **kwargs):
        consumer = create(self, *args, **kwargs)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read by AIOKafkaConsumer.start() for its fetcher
        return consumer

    aiokafka_driver.AIOKafkaConsumerThread._create_worker_consumer = _create_worker_consumer
    _installed = True
    log.info("faust-streaming %s: consumer loop patched (batch delivery; no per-message wait_first; "
             "fetch wait %d ms)", faust.__version__, FETCH_MAX_WAIT_MS)
