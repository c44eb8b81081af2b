"""The batch hand-over between the consumer loop and the ingest agent (streams/inbox.py)."""
from __future__ import annotations

import asyncio

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
