"""Two measured patches of faust-streaming's consumer loop (see bench/README.md and the README).

1. Batch delivery. Topics registered with `deliver_in_batches` skip the conductor: each fetched
   partition's records become messages in one tight loop and are appended at once to a `BatchInbox`
   that a batch agent empties (processors/agents.py). Upstream turns every message into an Event, puts
   it on a queue, and the stream takes it off again with an event-loop turn and sensors per message;
   measured here that was about a third of the worker's CPU. Subscription, assignment, acknowledgements
   and commits stay Faust's: the agent acks the messages with the same offset bookkeeping as
   `Consumer.ack`, a batch at a time (`ack_many`).
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
from typing import cast

import faust
from faust.transport import consumer as fc
from faust.transport.drivers import aiokafka as aiokafka_driver
from faust.types.tuples import ack_lock
from mode.utils.futures import notify
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
    if app.conf.stream_wait_empty:  # it would wait for nothing: batches are not in Faust's unacked set
        raise RuntimeError("batch delivery needs stream_wait_empty=False: a batch in flight at a rebalance is "
                           "read again by the partition's next owner (see ack_many)")
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
    """faust-streaming 0.15's loop over `getmany`, with each fetched partition's records handed over at once."""
    consumer_should_stop = cast(Service, self)._stopped.is_set
    fetcher_should_stop = cast(Service, fetcher)._stopped.is_set
    set_flag, unset_flag = self.diag.set_flag, self.diag.unset_flag
    try:
        while not (consumer_should_stop() or fetcher_should_stop()):
            set_flag(fc.CONSUMER_FETCHING)
            seeks_at_fetch = self._autologs_seeks
            records, active_partitions = await self._wait_next_records(1.0)
            await self.sleep(0)
            if records is not None and not self.should_stop:
                if self.flow_active:
                    reread = await _deliver(self, records, active_partitions, seeks_at_fetch)
                    if reread:
                        await _reread(self, reread)
                else:  # as upstream's getmany: seek back to the committed offsets
                    try:
                        await self.perform_seek()
                    except Exception as ex:
                        self.log.warning(f"exception performing seek when flow not active {ex}")
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


async def _deliver(self, records: dict, active_partitions, seeks_at_fetch: int) -> set:
    """One fetch, partition by partition. Returns the partitions to re-read from their committed offset.

    Inbox topics get a partition's records as one list, with the per-message checks of upstream's
    getmany and loop (read offset, gaps, flow, generation, seeks) done per partition or in one tight
    loop; other topics (changelogs being recovered, other agents) go through the conductor per message.
    """
    app = self.app
    generation_id = app.consumer_generation_id
    flow_control = app.flow_control
    producer_buffer = app.producer.buffer
    reread: set = set()
    for tp, tp_records in records.items():
        if not tp_records:
            continue
        if not self.flow_active or app.consumer_generation_id != generation_id:
            break  # a rebalance began: upstream stops delivering this fetch too
        if active_partitions is not None and tp not in active_partitions and tp not in self._buffered_partitions:
            continue
        app.monitor.track_tp_end_offset(tp, self.highwater(tp))
        inbox = _inboxes.get(tp.topic)
        if inbox is None:
            await _deliver_each(self, tp, tp_records, generation_id)
            continue
        if inbox.full() or not flow_control.is_active():
            await self.wait_first(_room(inbox, flow_control), self.suspend_flow.wait())
        if (self._autologs_seeks != seeks_at_fetch or inbox.full() or not flow_control.is_active()
                or app.consumer_generation_id != generation_id):
            reread.add(tp)  # fetched before a seek, or a rebalance came first: read again after it
            continue
        messages, gaps, last = _messages(tp, tp_records, self._read_offset.get(tp), generation_id)
        if app.topics.acks_enabled_for(tp.topic):
            for gap_from, gap_to in gaps:
                await self._add_gap(tp, gap_from, gap_to)
        if self._autologs_seeks != seeks_at_fetch:  # _add_gap awaited
            reread.add(tp)
            continue
        if self._commit_every is not None and self._n_acked >= self._commit_every:
            self._n_acked = 0
            await self.commit()
        if messages:
            inbox.put_many(messages)
            self._read_offset[tp] = last
        await asyncio.sleep(0)
        if producer_buffer.size > producer_buffer.max_messages:  # the conductor's ebb
            await self.wait_first(producer_buffer.wait_until_ebb(), self.suspend_flow.wait())
    return reread


class InboxMessage(fc.ConsumerMessage):
    """A Faust message that is also what the pipeline reads (processors.validate.RawMessage's fields)."""

    __slots__ = ("finished",)  # set by streams.inbox.InOrderAcks (unset until then)

    @property
    def timestamp_ms(self) -> int:
        return int(self.timestamp * 1000) if self.timestamp is not None else 0


def _messages(tp, records: list, read_offset, generation_id) -> tuple[list, list, int]:
    """Faust messages of one partition's records, past the read offset; the offset gaps between them."""
    messages, gaps = [], []
    last = read_offset
    append = messages.append
    topic, partition = tp.topic, tp.partition
    for record in records:
        offset = record.offset
        if last is not None and offset < last:
            continue
        if last and offset - last > 1:
            gaps.append((last + 1, offset))
        ts = record.timestamp
        append(InboxMessage(topic, partition, offset, None if ts is None else ts / 1000.0,
                                  record.timestamp_type, record.headers, record.key, record.value,
                                  record.checksum, record.serialized_key_size, record.serialized_value_size,
                                  tp, generation_id=generation_id))
        last = offset
    return messages, gaps, last


async def _deliver_each(self, tp, tp_records: list, generation_id) -> None:
    """Upstream's per-message path, for topics without an inbox."""
    acks_enabled = self.app.topics.acks_enabled_for(tp.topic)
    callback, to_message = self.callback, self._to_message
    for n, record in enumerate(tp_records, 1):
        if not self.flow_active or self.app.consumer_generation_id != generation_id:
            return
        if n % 100 == 0:
            await asyncio.sleep(0)
        message = to_message(tp, record)
        offset = message.offset
        r_offset = self._read_offset.get(tp)
        if r_offset is None or offset >= r_offset:
            gap = offset - (r_offset or 0)
            if gap > 1 and r_offset and acks_enabled:
                await self._add_gap(tp, r_offset + 1, offset)
            if self._commit_every is not None and self._n_acked >= self._commit_every:
                self._n_acked = 0
                await self.commit()
            if _may_block(self, tp):
                await self.wait_first(callback(message), self.suspend_flow.wait())
            else:
                await callback(message)  # cannot block: no need for two tasks per message
            self._read_offset[tp] = offset


def ack_many(consumer, messages) -> None:
    """`Consumer.ack` for a batch: the same bookkeeping under one lock, one wake-up of the committers.

    Faust's set of unacknowledged messages (`_unacked_messages`, a WeakSet) is left out, here and when the
    agent takes a batch: only `Consumer.wait_empty` reads it, which the worker never calls
    (`stream_wait_empty=False`, checked by `deliver_in_batches`: a batch in flight at a rebalance is simply
    read again by the partition's next owner). Adding and removing a weak reference per message was ~4% of
    the event loop's samples."""
    n_acked = 0
    with ack_lock:
        acks_enabled: dict = {}
        committed_offsets, acked_index, acked = consumer._committed_offset, consumer._acked_index, consumer._acked
        for m in messages:
            if m.acked:
                continue
            m.acked = True
            enabled = acks_enabled.get(m.topic)
            if enabled is None:
                enabled = acks_enabled[m.topic] = consumer.app.topics.acks_enabled_for(m.topic)
            if not enabled:
                continue
            tp, offset = m.tp, m.offset
            committed = committed_offsets[tp]
            if committed is None or offset >= committed:
                index = acked_index[tp]
                if offset not in index:
                    index.add(offset)
                    acked[tp].append(offset)
                    n_acked += 1
        consumer._n_acked += n_acked
        notify(consumer._waiting_for_ack)


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
