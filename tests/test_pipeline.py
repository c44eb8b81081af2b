"""The batch step's two phases, on the real engine (chdb), without a broker.

A batch is validated and derived at once (`Pipeline.start`), and finished later: its rows written, then
its contact states published. The worker starts the next batch meanwhile, so these tests hold inserts
back and check what the next batch sees and what is published when.
"""
from __future__ import annotations

import asyncio
import threading

import pytest

from autologs import migrate
from autologs.clickhouse import ClickHouse
from autologs.config import Settings
from processors.pipeline import DictStates, Pipeline
from processors.validate import RawMessage
from tests.examples import example, keyed


class RecordingStates(DictStates):
    def __init__(self) -> None:
        super().__init__()
        self.published: list[list[bytes]] = []

    async def publish(self, changed) -> None:
        self.published.append(sorted(changed))


@pytest.fixture
def db(ch):
    scratch = ClickHouse(ch.settings, database=f"{ch.database}_pipeline")
    scratch.command("DROP DATABASE IF EXISTS {db}")
    migrate.migrate(scratch)
    yield scratch
    scratch.command("DROP DATABASE IF EXISTS {db}")
    scratch.close()


def _held_back(db: ClickHouse) -> threading.Event:
    """Inserts wait until the event is set (they run in the ClickHouse thread, so the loop goes on)."""
    gate, insert = threading.Event(), db.insert

    def insert_when_open(*args, **kwargs):
        assert gate.wait(30), "the test never opened the gate"
        return insert(*args, **kwargs)

    db.insert = insert_when_open  # type: ignore[method-assign]
    return gate


def _message(offset: int, event: dict) -> RawMessage:
    key, value = keyed(event)
    return RawMessage("events", 0, offset, key, value, 0)


async def _no_dead_letters(items):
    raise AssertionError(f"unexpected dead letters: {items}")


def _held_back_pipeline(db: ClickHouse) -> tuple[Pipeline, RecordingStates, threading.Event]:
    """Every event released at once (no lateness), inserts held back until the gate opens."""
    states = RecordingStates()
    settings = Settings(scenario_lateness_s=0, scenario_idle_release_s=1e-9)
    gate = _held_back(db)  # before the pipeline: its tables' lanes copy the helper
    return Pipeline(settings, db, _no_dead_letters, states), states, gate


def test_the_next_batch_derives_from_states_not_yet_written_which_are_published_after_the_rows(db):
    started = example("automation_started", 1, email="ann@example.com", contact_id=7)
    page = example("page", 2, email="ann@example.com", contact_id=7)  # attributed through the enrollment
    pipeline, states, gate = _held_back_pipeline(db)

    async def story():
        finish_first = await pipeline.start([_message(0, started)], tokens=[0])
        finish_second = await pipeline.start([_message(1, page)], tokens=[1])
        await asyncio.sleep(0.2)
        assert states.published == [], "states are published only once their rows are written"
        assert db.rows("SELECT count() FROM {db}.scenario_log")[0][0] == 0
        gate.set()
        return await finish_first, await finish_second

    done_first, done_second = asyncio.run(story())
    assert (done_first, done_second) == ([0], [1])
    assert states.published == [[b"acct-1:ann@example.com"], []], "in order, the first batch's states first"
    rows = db.rows("SELECT source_event_id, scenario_id, attribution FROM {db}.scenario_log FINAL "
                   "ORDER BY occurred_at")
    assert rows == [(started["event_id"], "sc-1", "automation"), (page["event_id"], "sc-1", "enrollment")]
    assert db.rows("SELECT count() FROM {db}.event_log FINAL")[0][0] == 2


def test_a_batch_whose_predecessor_failed_publishes_nothing(db):
    first = example("automation_started", 1, email="bob@example.com", contact_id=8)
    second = example("automation_exited", 2, email="bob@example.com", contact_id=8)
    pipeline, states, gate = _held_back_pipeline(db)

    async def story():
        finish_first = await pipeline.start([_message(0, first)])
        finish_second = await pipeline.start([_message(1, second)])
        first_task = asyncio.ensure_future(finish_first)
        await asyncio.sleep(0.05)
        first_task.cancel()  # e.g. the worker stops while the first batch is being written
        gate.set()
        with pytest.raises(asyncio.CancelledError):
            await first_task
        with pytest.raises(RuntimeError, match="batch cancelled"):
            await finish_second

    asyncio.run(story())
    assert states.published == [], "no state may be published ahead of rows that were not written"


async def test_a_removal_the_state_does_not_know_is_named_from_what_its_sender_saw(db):
    """States lost, or data older than the topics: the removal still names the scenario and its step, and
    the contact keeps its entry time. Where the state knows the enrollment, the state wins."""
    from datetime import datetime, timezone

    import orjson

    from schemas.commands import RemoveContact

    pipeline = Pipeline(Settings(scenario_lateness_s=0, scenario_idle_release_s=1e-9), db, _no_dead_letters,
                        DictStates(), commands_topic="commands")
    entered = datetime(2026, 11, 20, 9, 0, tzinfo=timezone.utc)
    known = example("automation_started", 1, account="acct-seen", email="kim@example.com", automation_id="sc-1",
                    automation_name="Welcome series", step_id="s1")
    await pipeline.handle([_message(0, known)])
    await pipeline.drain()

    def removal(offset: int, email: str) -> RawMessage:
        command = RemoveContact(
            request_id=f"r{offset}", account_id="acct-seen", scenario_id="sc-1", email=email,
            requested_at=datetime(2026, 11, 21, 10, 0, tzinfo=timezone.utc), requested_by="ops",
            seen={"scenario_name": "Stale name", "step_id": "s2", "entered_at": entered})
        return RawMessage("commands", 0, offset, f"acct-seen:{email}".encode(),
                          orjson.dumps(command.model_dump(mode="json")), 0)

    await pipeline.handle([removal(1, "zoe@example.com"), removal(2, "kim@example.com")])
    await pipeline.drain()
    rows = db.rows("SELECT email, scenario_name, step_id, workflow_point FROM {db}.scenario_log FINAL "
                   "WHERE account_id = 'acct-seen' AND workflow_point = 'manually_removed' ORDER BY email")
    assert rows == [("kim@example.com", "Welcome series", "s1", "manually_removed"),
                    ("zoe@example.com", "Stale name", "s2", "manually_removed")]
    [zoe] = db.rows("SELECT scenario_name, step_id, status, entered_at FROM {db}.enrollment_state FINAL "
                    "WHERE account_id = 'acct-seen' AND email = 'zoe@example.com'")
    assert zoe[:3] == ("Stale name", "s2", "removed") and zoe[3].replace(tzinfo=timezone.utc) == entered

    # The same removal submitted again (another request): the contact is already out, nothing is logged.
    tokens = await pipeline.handle([removal(3, "zoe@example.com")])
    await pipeline.drain()
    assert len(tokens) == 1 and pipeline.stats.removals_ignored == 1  # acknowledged all the same
    assert db.rows("SELECT count() FROM {db}.scenario_log FINAL WHERE account_id = 'acct-seen' "
                   "AND email = 'zoe@example.com' AND workflow_point = 'manually_removed'") == [(1,)]
    assert db.rows("SELECT count() FROM {db}.event_log FINAL WHERE account_id = 'acct-seen' "
                   "AND email = 'zoe@example.com' AND event_type = 'automation_removed'") == [(1,)]


async def test_a_failing_write_stays_reported_while_an_overlapping_one_succeeds():
    """Two batches are in flight: the second's insert succeeding must not make /health say ok while the
    first one is still being retried."""
    from sinks.clickhouse import ClickHouseSink

    class Flaky:
        def __init__(self):
            self.fail_first = 3

        async def run(self, fn, *args):
            return fn(*args)

        def insert(self, table, rows, columns):
            if rows[0][0] == "first" and self.fail_first:
                self.fail_first -= 1
                raise RuntimeError("ClickHouse is away")

    sink = ClickHouseSink(Flaky(), "event_log", ("x",), retry_max_s=0.05, retry_first_s=0.01)
    first = asyncio.ensure_future(sink.write([["first"]]))
    await asyncio.sleep(0.005)
    assert sink.stats.failing_since and sink.stats.failing_writes == 1
    await sink.write([["second"]])
    assert sink.stats.failing_since and sink.stats.failing_writes == 1  # the first is still retrying
    await first
    assert sink.stats.failing_since == 0 and sink.stats.failing_writes == 0 and sink.stats.rows_written == 2


async def test_the_same_messages_fetched_in_other_batches_derive_the_same_rows(monkeypatch):
    """A replay fetches the same messages in other batches each time: the rows and states must not depend
    on it, events later than the lateness included (found in review: five replays of a back-filled topic
    gave five scenario logs, 42 to 431 rows apart, because a batch's released events were re-sorted)."""
    import random
    from datetime import datetime, timedelta

    from sinks.clickhouse import ClickHouseSink
    from streams.simulate import SimulationSpec, generate

    written: dict[str, list] = {}

    async def record(self, rows) -> None:
        written.setdefault(self.table, []).extend(tuple(r) for r in rows)

    monkeypatch.setattr(ClickHouseSink, "write", record)
    events = list(generate(SimulationSpec(contacts=400)))
    rng = random.Random(3)
    lateness = timedelta(seconds=60)

    def arrival(ev: dict):  # most within the lateness, one in eight up to an hour late (a back-fill)
        t = datetime.fromisoformat(ev["occurred_at"])
        return t + (lateness * 60 * rng.random() if rng.random() < 0.125 else lateness * 0.9 * rng.random())

    arriving = [ev for _, ev in sorted(((arrival(ev), i), ev) for i, ev in enumerate(events))]
    messages = [RawMessage("events", 0, n, *keyed(ev), 0) for n, ev in enumerate(arriving)]
    settings = Settings(scenario_lateness_s=60, scenario_idle_release_s=1e9)

    async def derive(size: int):
        written.clear()
        states = DictStates()
        pipeline = Pipeline(settings, None, _no_dead_letters, states)  # type: ignore[arg-type]
        for i in range(0, len(messages), size):
            await pipeline.handle(messages[i:i + size])
        await pipeline.drain()
        return {t: sorted(rows, key=repr) for t, rows in written.items()}, dict(states.items())

    first = await derive(1)
    assert len(first[0]["scenario_log"]) > 300 and first[1]
    late = sum(1 for a, b in zip(arriving, arriving[1:]) if b["occurred_at"] < a["occurred_at"])
    assert late > 100  # the stream does arrive out of order
    for size in (7, 250, len(messages)):
        assert await derive(size) == first, size


def test_each_table_is_written_in_a_lane_of_its_own(db):
    """A slow insert into one table does not hold back the others (they used to share one thread)."""
    gate, insert = threading.Event(), db.insert

    def slow_event_log(table, *args, **kwargs):
        if table == "event_log":
            assert gate.wait(30), "the test never opened the gate"
        return insert(table, *args, **kwargs)

    db.insert = slow_event_log  # type: ignore[method-assign]
    started = example("automation_started", 1, email="cy@example.com", contact_id=9)
    pipeline = Pipeline(Settings(scenario_lateness_s=0, scenario_idle_release_s=1e-9), db, _no_dead_letters,
                        RecordingStates())
    assert len({id(s.ch._executor) for s in (pipeline.event_sink, pipeline.scenario_sink,  # noqa: SLF001
                                             pipeline.enrollment_sink)}) == 3

    async def story():
        finish = asyncio.ensure_future(await pipeline.start([_message(0, started)]))
        for _ in range(100):  # the scenario log and the state are written while the event log waits
            if db.rows("SELECT count() FROM {db}.enrollment_state")[0][0] and \
                    db.rows("SELECT count() FROM {db}.scenario_log")[0][0]:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the other tables waited for the event log's insert")
        assert not finish.done() and db.rows("SELECT count() FROM {db}.event_log")[0][0] == 0
        gate.set()
        return await finish

    assert asyncio.run(story()) == [_message(0, started)]
    assert db.rows("SELECT count() FROM {db}.event_log")[0][0] == 1
