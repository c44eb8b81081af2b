"""The batch hand-over between the consumer loop and the ingest agent (streams/inbox.py)."""
from __future__ import annotations

import asyncio
import time

import pytest

from streams.inbox import BatchInbox


async def test_a_full_batch_is_taken_at_once_and_in_order():
    inbox = BatchInbox(maxsize=10, batch_rows=3)
    for i in range(5):
        inbox.put(i)
    assert await inbox.take(within=5.0) == [0, 1, 2]  # full batch: no waiting
    assert len(inbox) == 2


async def test_a_partial_batch_waits_at_most_within_after_the_first():
    inbox = BatchInbox(maxsize=200, batch_rows=100)
    inbox.put("a")
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await inbox.take(within=0.2) == ["a"]
    assert 0.15 <= loop.time() - started < 2.0


async def test_take_waits_for_the_first_message_and_the_full_inbox_makes_room():
    inbox = BatchInbox(maxsize=2, batch_rows=2)
    taker = asyncio.ensure_future(inbox.take(within=0.1))
    await asyncio.sleep(0.2)
    assert not taker.done()  # `within` counts from the first message, not from the call
    inbox.put(1)
    assert await asyncio.wait_for(taker, 1.0) == [1]
    inbox.put(2)
    inbox.put(3)
    assert inbox.full()
    room = asyncio.ensure_future(inbox.wait_space())
    await asyncio.sleep(0.05)
    assert not room.done()  # the consumer loop would wait here
    assert await inbox.take(within=5.0) == [2, 3]
    await asyncio.wait_for(room, 1.0)


def test_an_inbox_smaller_than_a_batch_is_refused():
    with pytest.raises(ValueError):
        BatchInbox(maxsize=5, batch_rows=10)


async def test_put_many_wakes_the_taker_and_fills_the_inbox():
    inbox = BatchInbox(maxsize=4, batch_rows=3)
    taker = asyncio.ensure_future(inbox.take(within=5.0))
    await asyncio.sleep(0.05)
    inbox.put_many([1, 2, 3, 4, 5])  # one fetched partition: may pass maxsize by one fetch
    assert await asyncio.wait_for(taker, 1.0) == [1, 2, 3]
    assert len(inbox) == 2 and not inbox.full()
    inbox.put_many([6, 7])
    assert inbox.full()


class _Record:
    def __init__(self, offset: int):
        self.offset, self.timestamp, self.timestamp_type = offset, 1_700_000_000_000, 0
        self.headers, self.key, self.value, self.checksum = [], b"k", b"v%d" % offset, None
        self.serialized_key_size, self.serialized_value_size = 1, 2


def test_a_fetched_partition_becomes_messages_past_the_read_offset_with_its_gaps():
    from faust.types import TP

    from streams.faust_patches import _messages

    tp = TP("t", 3)
    records = [_Record(o) for o in (4, 5, 6, 9, 10, 13)]
    messages, gaps, last = _messages(tp, records, read_offset=5, generation_id=7)
    # offset 5 is the read offset itself (after a seek it is the next one to read): kept, as upstream does
    assert [m.offset for m in messages] == [5, 6, 9, 10, 13]
    assert gaps == [(7, 9), (11, 13)] and last == 13
    m = messages[0]
    assert (m.topic, m.partition, m.tp, m.generation_id, m.value, m.timestamp) == ("t", 3, tp, 7, b"v5", 1_700_000_000.0)
    assert not m.acked and m.refcount == 0
    assert m.timestamp_ms == 1_700_000_000_000 and m.key == b"k" and m.headers == []  # what the pipeline reads
    messages, gaps, last = _messages(tp, records, read_offset=None, generation_id=1)
    assert [m.offset for m in messages] == [4, 5, 6, 9, 10, 13] and gaps == [(7, 9), (11, 13)]
    assert _messages(tp, records, read_offset=20, generation_id=1) == ([], [], 20)


def _consumer(name: str):
    import faust

    app = faust.App(name, broker="kafka://127.0.0.1:9")  # never started: only the consumer's bookkeeping
    app.topics._acking_topics.add("events")
    return app.consumer


def test_batch_acks_keep_fausts_bookkeeping():
    """ack_many leaves a Faust consumer's offsets exactly as per-message track + Consumer.ack would; only the
    set of unacknowledged messages (read by `wait_empty` alone, never called by the worker) stays empty."""
    from faust.types import TP

    from streams.faust_patches import _messages, ack_many

    records = [_Record(o) for o in (10, 11, 12, 14, 15)]
    tp = TP("events", 0)
    one, batch = _consumer("per-message"), _consumer("batch")
    for c in (one, batch):
        c._committed_offset[tp] = 11  # offset 10 is below the committed offset: acked, not counted
    msgs_one, _, _ = _messages(tp, records, None, 1)
    msgs_batch, _, _ = _messages(tp, records, None, 1)
    for m in msgs_one:
        one.unacked.add(m)
    for m in msgs_one[:4]:
        one.ack(m)
    ack_many(batch, msgs_batch[:4] + msgs_batch[:2])  # acking twice changes nothing
    for c in (one, batch):
        assert c._acked[tp] == [11, 12, 14] and c._acked_index[tp] == {11, 12, 14} and c._n_acked == 3
    assert [m.acked for m in msgs_batch] == [m.acked for m in msgs_one] == [True] * 4 + [False]
    assert {m.offset for m in one.unacked} == {10, 15} and len(batch.unacked) == 0


def test_the_batch_hand_over_refuses_an_app_that_waits_for_unacknowledged_messages():
    import faust

    from streams.faust_patches import deliver_in_batches
    from streams.inbox import BatchInbox

    app = faust.App("waits", broker="kafka://127.0.0.1:9", stream_wait_empty=True)
    with pytest.raises(RuntimeError, match="stream_wait_empty"):
        deliver_in_batches(app, app.channel(), BatchInbox(10, 5))

def test_acks_follow_each_partitions_offset_order():
    from streams.inbox import InOrderAcks

    class M:
        def __init__(self, tp, offset):
            self.tp, self.offset = tp, offset

    a = [M("a", n) for n in range(5)]
    b = [M("b", n) for n in range(3)]
    acks = InOrderAcks()
    acks.delivered(a[:3] + b)
    acks.delivered(a[3:])
    assert acks.finished([a[1], a[2], b[0]]) == [b[0]]  # a[0] is still held: nothing of a yet
    assert [m.offset for m in acks.finished([a[4], a[0]])] == [0, 1, 2]  # a[3] is still pending
    assert acks.forget(["b"]) == 2 and acks.finished([b[1], b[2]]) == []  # revoked: re-read by the next owner
    assert [m.offset for m in acks.finished([a[3]])] == [3, 4] and len(acks) == 0


async def test_within_counts_from_the_oldest_waiting_message_not_from_the_take():
    """Messages that came while the previous batch was derived have waited already: the next take does not
    make them wait `within` again."""
    inbox = BatchInbox(maxsize=200, batch_rows=100)
    loop = asyncio.get_running_loop()
    inbox.put_many(["a", "b"])
    await asyncio.sleep(0.3)  # the agent was busy with the batch before
    started = loop.time()
    assert await inbox.take(within=0.25) == ["a", "b"]
    assert loop.time() - started < 0.1
    inbox.put_many(["c"] * 150)
    await asyncio.sleep(0.05)
    inbox.put_many(["d"] * 10)
    assert len(await inbox.take(within=0.25)) == 100  # a full batch; 50 "c" (already waiting) and 10 "d" remain
    await asyncio.sleep(0.25)
    started = loop.time()
    assert await inbox.take(within=0.25) == ["c"] * 50 + ["d"] * 10
    assert loop.time() - started < 0.1  # the oldest left, a "c", had waited its time
    inbox.put("e")
    started = loop.time()
    assert await inbox.take(within=0.2) == ["e"]
    assert 0.15 <= loop.time() - started < 2.0  # a fresh arrival still waits for company


async def test_a_batch_says_when_its_newest_message_was_fetched_and_the_inbox_each_partitions_last_offset():
    """What the idle release counts a partition's quiet from, and checks the agent has read (agents.caught_up)."""
    from types import SimpleNamespace

    def fetched(tp: str, offsets: range) -> list:
        return [SimpleNamespace(tp=tp, offset=o) for o in offsets]

    inbox = BatchInbox(maxsize=200, batch_rows=3)
    inbox.put_many(fetched("p0", range(0, 2)))
    await asyncio.sleep(0.2)
    second = time.monotonic()
    inbox.put_many(fetched("p1", range(10, 14)))
    assert (inbox.last_offset("p0"), inbox.last_offset("p1"), inbox.last_offset("p2")) == (1, 13, None)
    assert [m.offset for m in await inbox.take(within=5.0)] == [0, 1, 10]
    assert inbox.taken_fetched_at >= second  # its newest message came with the second fetch

    inbox = BatchInbox(maxsize=200, batch_rows=2)
    inbox.put_many(fetched("p0", range(0, 2)))
    first_done = time.monotonic()
    await asyncio.sleep(0.2)
    inbox.put_many(fetched("p1", range(10, 12)))
    assert [m.offset for m in await inbox.take(within=5.0)] == [0, 1]
    assert inbox.taken_fetched_at <= first_done  # all of the first fetch: not the time of the one after
    assert [m.offset for m in await inbox.take(within=5.0)] == [10, 11] and inbox.taken_fetched_at > first_done


def test_a_partition_whose_fetched_messages_the_agent_has_not_read_yet_is_not_quiet(monkeypatch):
    """The idle release counts a partition's quiet from its last fetch: a backlog still in the inbox must hold
    it back, or the held events would be derived before the ones waiting there (agents.caught_up)."""
    from types import SimpleNamespace

    from aiokafka import TopicPartition

    from processors import agents

    inbox = BatchInbox(maxsize=10, batch_rows=5)
    tp = TopicPartition(agents._events_topic, 0)
    inbox.put_many([SimpleNamespace(tp=tp, offset=o) for o in (7, 8)])
    read = SimpleNamespace(read_to={0: 7})
    monkeypatch.setattr(agents, "_inbox", inbox)
    monkeypatch.setattr(agents, "_pipeline", read)
    monkeypatch.setattr(agents, "_fetch_state", lambda partition: None)  # the consumer waits for nothing more
    assert not agents.caught_up(0, 10.0)  # offset 8 is fetched, not read
    read.read_to[0] = 8
    assert agents.caught_up(0, 10.0)
    assert agents.caught_up(1, 10.0)  # nothing fetched of it here
