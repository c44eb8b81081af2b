"""The replay engine in this process (real broker, real chdb, a scratch database): resume after a crash,
retention refusals, and table retention settings."""
from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete

from autologs import migrate
from autologs.clickhouse import ClickHouse
from processors.pipeline import DictStates, Pipeline
from processors.validate import RawMessage
from replay import run as replay_run
from replay.plan import ReplayRefused, plan_replay
from replay.run import Replay
from streams.produce import publish
from streams.topics import Topics, ensure_topics, partitions_of
from tests import story
from tests.examples import example
from tests.test_scenarios import keyed

TABLE_QUERIES = {
    "event_log": "SELECT event_id, event_type, email, step_id FROM {db}.event_log FINAL ORDER BY event_id",
    "scenario_log": "SELECT scenario_id, source_event_id, step_id, attribution FROM {db}.scenario_log FINAL "
                    "ORDER BY scenario_id, source_event_id",
    "enrollment_state": "SELECT scenario_id, contact_key, status, step_id, entered_at FROM {db}.enrollment_state "
                        "FINAL ORDER BY scenario_id, contact_key",
    "event_log_by_time": "SELECT event_id, event_type, email, step_id FROM {db}.event_log_by_time FINAL "
                         "ORDER BY event_id",
    "scenario_log_by_contact": "SELECT scenario_id, source_event_id, step_id, email FROM "
                               "{db}.scenario_log_by_contact FINAL ORDER BY scenario_id, source_event_id",
    # the contacts page's copy, read as the page reads it: the highest version of each key
    "enrollment_state_by_entry": "SELECT scenario_id, contact_key, status, step_id, entered_at FROM "
                                 "(SELECT * FROM {db}.enrollment_state_by_entry ORDER BY version DESC "
                                 "LIMIT 1 BY scenario_id, contact_key) ORDER BY scenario_id, contact_key",
}


@pytest.fixture
def scratch(settings):
    """Topics holding the story, and an empty migrated database of their own."""
    names = Topics(f"{settings.topic_prefix}-engine-{uuid.uuid4().hex[:6]}")
    db = ClickHouse(settings.model_copy(update={"topic_prefix": names.prefix}),
                    database=f"scratch_{names.prefix.replace('-', '_')}")
    db.command("DROP DATABASE IF EXISTS {db}")
    migrate.migrate(db)
    yield names, db
    db.command("DROP DATABASE IF EXISTS {db}")


async def _publish_story(settings, names: Topics) -> None:
    await ensure_topics(settings, names.all())
    await publish(settings, names.events, [keyed(e) for e in story.phase_one() + story.phase_two()])


def tables(db: ClickHouse) -> dict[str, list[tuple]]:
    return {t: db.rows(q) for t, q in TABLE_QUERIES.items()}


class Crash(Exception):
    """A crash of the replay's process, at a point a test picks."""


async def test_a_crashed_replay_resumes_to_the_same_tables(settings, scratch, monkeypatch, tmp_path):
    names, db = scratch
    await _publish_story(settings, names)
    s = db.settings.model_copy(update={"sink_max_rows": 4, "data_dir": tmp_path})
    plan = await plan_replay(s.kafka_bootstrap, names.sources(), None, None)

    await Replay(s, db, plan).run()
    straight = tables(db)
    assert len(straight["event_log"]) == 21 and len(straight["enrollment_state"]) == 3

    monkeypatch.setattr(replay_run, "CHECKPOINT_EVERY_S", 0.0)  # a checkpoint after every batch

    def crash_midway(progress):
        if progress.read >= 12:
            raise Crash()

    with pytest.raises(Crash):
        await Replay(s, db, plan, progress=crash_midway).run()
    checkpoint = tmp_path / "replay" / "checkpoint.json"
    assert checkpoint.exists()
    report = await Replay(s, db, plan).run(resume=True)
    assert report.swapped and report.messages_read == 21 and not checkpoint.exists()
    assert tables(db) == straight
    assert straight["event_log_by_time"] == straight["event_log"]  # the dumps' copy was rebuilt with the log
    by_contact = [(s, e, st) for s, e, st, _ in straight["scenario_log_by_contact"]]
    assert by_contact == [(s, e, st) for s, e, st, _ in straight["scenario_log"]] and by_contact
    assert straight["enrollment_state_by_entry"] == straight["enrollment_state"]
    left = db.rows("SELECT name FROM system.tables WHERE database = {d:String} AND name LIKE '%\\_\\_replay'",
                   {"d": db.database})
    assert left == []  # every shadow table was swapped in


async def _story_replayed_once(settings, scratch, tmp_path):
    """The story in its topics, replayed once without a crash: the settings, database and plan to replay it
    again, that replay's report, and the tables it built (what a crashed and resumed replay must equal)."""
    names, db = scratch
    await _publish_story(settings, names)
    s = db.settings.model_copy(update={"data_dir": tmp_path})
    plan = await plan_replay(s.kafka_bootstrap, names.sources(), None, None)
    whole = await Replay(s, db, plan).run()
    return s, db, plan, whole, tables(db)


async def test_a_replay_that_crashed_in_its_first_seconds_can_be_resumed(settings, scratch, tmp_path):
    """The first timed checkpoint comes after 10 s: a replay killed before it could not be resumed, though the
    CLI said to (a replay of 300k events read for less than that; found in review)."""
    s, db, plan, whole, straight = await _story_replayed_once(settings, scratch, tmp_path)

    def crash_at_once(progress):
        if progress.read:
            raise Crash()

    with pytest.raises(Crash):
        await Replay(s, db, plan, progress=crash_at_once).run()
    report = await Replay(s, db, plan).run(resume=True)
    assert report.swapped and report.messages_read == whole.messages_read and tables(db) == straight


async def test_a_replay_that_crashed_after_its_swap_resumes_with_the_catch_up(settings, scratch, monkeypatch,
                                                                           tmp_path):
    """The swap is done once: a resume goes on where the crash left it, and the held tail is not lost."""
    s, db, plan, whole, straight = await _story_replayed_once(settings, scratch, tmp_path)

    async def crash(self):
        raise Crash()

    with monkeypatch.context() as m:
        m.setattr(Replay, "_catch_up", crash)
        with pytest.raises(Crash):
            await Replay(s, db, plan).run()
    swapped_in = tables(db)
    assert len(swapped_in["scenario_log"]) < len(straight["scenario_log"])  # the held tail is not in them yet
    report = await Replay(s, db, plan).run(resume=True)
    assert report.swapped and report.scenario_rows > 0
    assert (report.messages_read, report.scenario_rows, report.enrollment_changes, report.days_verified) == \
        (whole.messages_read, whole.scenario_rows, whole.enrollment_changes, whole.days_verified)  # the whole replay
    assert not (tmp_path / "replay" / "checkpoint.json").exists()
    assert tables(db) == straight


@pytest.mark.parametrize("crash_before", ["EXCHANGE", "RENAME"])
async def test_a_replay_that_crashed_in_its_swap_finishes_it(settings, scratch, monkeypatch, tmp_path, crash_before):
    """A crash between two of the swap's statements leaves some tables swapped and some not; the resume (or the
    restarted worker) finishes the swap instead of re-verifying shadow tables that were already swapped in."""
    s, db, plan, whole, straight = await _story_replayed_once(settings, scratch, tmp_path)
    command, seen = db.command, []

    def crash_in_the_swap(text, *args, **kwargs):
        if text.startswith(crash_before):
            seen.append(text)
            if len(seen) == 3:  # the third table's statement: two tables are swapped, the rest are not
                raise Crash()
        return command(text, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(db, "command", crash_in_the_swap)
        with pytest.raises(Crash):
            await Replay(s, db, plan).run()
    shadows = db.rows("SELECT name FROM system.tables WHERE database = {d:String} AND name LIKE '%\\_\\_replay'",
                      {"d": db.database})
    assert 0 < len(shadows) < 6, shadows  # half swapped
    assert replay_run.interrupted_after_swap(s)  # so the worker, restarted, finishes it by itself
    report = await Replay(s, db, plan).run(resume=True)
    assert report.swapped and (report.messages_read, report.scenario_rows, report.days_verified) == \
        (whole.messages_read, whole.scenario_rows, whole.days_verified)
    assert tables(db) == straight
    left = db.rows("SELECT name FROM system.tables WHERE database = {d:String} AND name LIKE '%\\_\\_replay'",
                   {"d": db.database})
    assert left == [] and not (tmp_path / "replay" / "checkpoint.json").exists()


async def test_an_id_a_producer_re_sent_with_another_time_does_not_fail_a_full_replay(settings, scratch, tmp_path):
    """The live log keeps both rows (its key has the time), and so does the rebuilt one: verification counts
    rows by that key, not by event id (it used to refuse every full replay from then on)."""
    names, db = scratch
    await _publish_story(settings, names)
    again = dict(story.phase_one()[0], occurred_at=(story.T0 + timedelta(minutes=30)).isoformat())
    await publish(settings, names.events, [keyed(again)])
    s = db.settings.model_copy(update={"data_dir": tmp_path})
    plan = await plan_replay(s.kafka_bootstrap, names.sources(), None, None)
    report = await Replay(s, db, plan).run()
    assert report.swapped and report.days_verified >= 1
    assert db.rows("SELECT count() FROM {db}.event_log FINAL WHERE event_id = {e:String}",
                   {"e": again["event_id"]}) == [(2,)]


async def test_resume_without_a_checkpoint_is_refused_and_changes_nothing(settings, scratch, tmp_path):
    names, db = scratch
    await _publish_story(settings, names)
    s = db.settings.model_copy(update={"data_dir": tmp_path})
    plan = await plan_replay(s.kafka_bootstrap, names.sources(), None, None)
    await Replay(s, db, plan).run()
    before = tables(db)
    db.command("TRUNCATE TABLE {db}.event_log")  # a live log that a fresh replay would rebuild
    with pytest.raises(ReplayRefused, match="no checkpoint"):
        await Replay(s, db, plan).run(resume=True)
    assert db.rows("SELECT count() FROM {db}.event_log")[0][0] == 0 and before["event_log"]
    left = db.rows("SELECT name FROM system.tables WHERE database = {d:String} AND name LIKE '%\\_\\_replay'",
                   {"d": db.database})
    assert left == []  # no shadow table was even created


async def test_replay_refuses_what_retention_deleted(settings, scratch):
    names, _ = scratch
    await _publish_story(settings, names)
    parts = await partitions_of(settings.kafka_bootstrap, [names.events])
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    await consumer.start()
    try:
        ends = await consumer.end_offsets(parts)
    finally:
        await consumer.stop()
    parts = [tp for tp in parts if ends[tp] > 1]
    assert parts
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:  # what retention does: the log start moves past the first messages
        await admin.delete_records({tp: RecordsToDelete(before_offset=1) for tp in parts})
    finally:
        await admin.close()
    with pytest.raises(ReplayRefused, match="no longer hold their beginning"):
        await plan_replay(settings.kafka_bootstrap, [names.events], None, None)
    with pytest.raises(ReplayRefused, match="retention"):
        await plan_replay(settings.kafka_bootstrap, [names.events], story.T0 - timedelta(days=400), None)


def test_table_retention_follows_the_settings(settings, scratch):
    _, db = scratch

    def ttl(table: str = "event_log") -> str:
        [(query,)] = db.rows("SELECT create_table_query FROM system.tables WHERE database = {d:String} "
                             "AND name = {t:String}", {"d": db.database, "t": table})
        return query.split(" TTL ")[1].split(" SETTINGS")[0] if " TTL " in query else ""

    assert ttl() == ""
    keep_30 = settings.model_copy(update={"event_log_ttl_days": 30})
    # The dumps' copy of the event log (event_log_by_time) keeps exactly what the event log keeps.
    assert migrate.apply_retention(db, keep_30) == ["event_log: rows kept 30 days",
                                                    "event_log_by_time: rows kept 30 days"]
    assert "30" in ttl() and ttl("event_log_by_time") == ttl()
    assert migrate.apply_retention(db, keep_30) == []  # idempotent: nothing to change at the next start
    assert migrate.apply_retention(db, settings) == ["event_log: rows kept forever",
                                                     "event_log_by_time: rows kept forever"]
    assert ttl() == "" == ttl("event_log_by_time")


async def test_a_full_replay_verifies_only_the_days_the_tables_keep(settings, scratch, monkeypatch, tmp_path):
    """A log TTL shorter than the topics' retention: the rebuilt tables drop the expired days (whenever
    their merges run), so those days are not verified, and the replay still swaps."""
    names, db = scratch
    await _publish_story(settings, names)  # dated a week ago
    db.command("ALTER TABLE {db}.event_log MODIFY TTL toDateTime(occurred_at) + INTERVAL 1 DAY")
    verify = Replay._verify

    def merged_first(self):  # the merge that applies the TTL has run before the count
        self.ch.command("OPTIMIZE TABLE {db}.event_log__replay FINAL")
        return verify(self)

    monkeypatch.setattr(Replay, "_verify", merged_first)
    s = db.settings.model_copy(update={"data_dir": tmp_path})
    plan = await plan_replay(s.kafka_bootstrap, names.sources(), None, None)
    report = await Replay(s, db, plan).run()
    assert report.swapped and report.days_verified == 0
    assert db.rows("SELECT count() FROM {db}.event_log FINAL")[0][0] == 0  # retention applies to what is rebuilt


async def _records(settings, topic: str) -> list[RawMessage]:
    """Every message of `topic`, as a worker reads it."""
    parts = await partitions_of(settings.kafka_bootstrap, [topic])
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        consumer.assign(parts)
        ends = await consumer.end_offsets(parts)
        for tp in parts:
            consumer.seek(tp, 0)
        out: list[RawMessage] = []
        while [tp for tp in parts if await consumer.position(tp) < ends[tp]]:
            for tp, recs in (await consumer.getmany(timeout_ms=1000)).items():
                out += [RawMessage(tp.topic, r.partition, r.offset, r.key, r.value, r.timestamp) for r in recs]
        return out
    finally:
        await consumer.stop()


def _live_worker(s, db: ClickHouse, names: Topics):
    """The worker's batch step beside a replay (its Pipeline, without Faust), and `arrive(*events)`: published,
    then read by it."""
    async def no_dead_letters(invalid):
        raise AssertionError(invalid)

    live = Pipeline(s, db, no_dead_letters, DictStates(), commands_topic=names.commands)
    read: set[tuple[int, int]] = set()

    async def arrive(*events: dict) -> None:
        await publish(s, names.events, [keyed(e) for e in events])
        new = [m for m in await _records(s, names.events) if (m.partition, m.offset) not in read]
        read.update((m.partition, m.offset) for m in new)
        await live.handle(new)
    return live, arrive


async def test_a_replay_leaves_what_the_live_worker_holds_to_it(settings, scratch, monkeypatch, tmp_path):
    """A tracker event must not be copied into an enrollment whose exit, earlier in event time, arrives after
    it: during the replay (Carol: the replay's tail waits for its catch-up), or after it (Erin: the live
    worker holds her events and derives them in order, so the replay leaves them to it). What the worker
    released meanwhile (Fred) the replay derives."""
    names, db = scratch
    await ensure_topics(settings, names.all())
    s = db.settings.model_copy(update={"data_dir": tmp_path, "scenario_idle_release_s": 1e9})
    now = datetime.now(timezone.utc).replace(microsecond=0)
    n = iter(range(100))

    def ev(kind: str, seconds_ago: float, who: str) -> dict:
        return example(kind, next(n), occurred_at=(now - timedelta(seconds=seconds_ago)).isoformat(),
                       account="acct-r", email=f"{who}@example.com", contact_id=len(who))

    started_d, tracked_d = ev("automation_started", 7200, "dan"), ev("track", 7100, "dan")
    started_c, tracked_c, exited_c = (ev("automation_started", 100, "carol"), ev("track", 10, "carol"),
                                      ev("automation_exited", 20, "carol"))
    started_e, tracked_e, exited_e = (ev("automation_started", 100, "erin"), ev("track", 10, "erin"),
                                      ev("automation_exited", 20, "erin"))
    started_f, tracked_f = ev("automation_started", 100, "fred"), ev("track", 10, "fred")

    live, arrive = _live_worker(s, db, names)
    await arrive(started_d, tracked_d)
    await live.drain()  # the live worker released Dan's events long ago
    await arrive(started_c, tracked_c, started_e, tracked_e, started_f, tracked_f)  # held: within the lateness
    catch_up = Replay._catch_up

    async def carol_exits_during_the_replay(self):
        await arrive(exited_c)
        async with live.lock:  # the worker releases Fred's events (as a quiet partition would), after the swap
            fred = next(p for p, h in live.held.items() if h.event["email"] == "fred@example.com")
            released = live.held.take_contact(fred, lambda h: h.event["email"] == "fred@example.com", 2**62)
            finish = live._derive_and_write(None, [], released, [])
        await finish
        return await catch_up(self)

    monkeypatch.setattr(Replay, "_catch_up", carol_exits_during_the_replay)
    plan = await plan_replay(s.kafka_bootstrap, names.sources(), None, None)
    report = await Replay(s, db, plan, live=live).run()
    assert report.swapped and report.caught_up == 1 and report.left_to_worker == 5, report  # not Fred's
    await arrive(exited_e)
    await live.drain()  # the live worker goes on: Carol's and Erin's events in their order

    rows = db.rows("SELECT email, workflow_point, type FROM {db}.scenario_log FINAL ORDER BY email, occurred_at")
    assert rows == [("carol@example.com", "started", "automation_started"),
                    ("carol@example.com", "exited", "automation_exited"),
                    ("dan@example.com", "started", "automation_started"), ("dan@example.com", "", "track"),
                    ("erin@example.com", "started", "automation_started"),
                    ("erin@example.com", "exited", "automation_exited"),
                    ("fred@example.com", "started", "automation_started"), ("fred@example.com", "", "track")], rows
    # What the replay derived (Dan's, which the live worker wrote into the tables swapped out) is back.
    state = db.rows("SELECT email, status FROM {db}.enrollment_state FINAL ORDER BY email")
    assert state == [("carol@example.com", "exited"), ("dan@example.com", "active"),
                     ("erin@example.com", "exited"), ("fred@example.com", "active")], state


async def test_a_replay_derives_what_the_worker_released_in_the_worker_s_order(settings, scratch, monkeypatch,
                                                                              tmp_path):
    """An event late by less than the lateness, read by the worker after the replay's end offsets, was applied
    by the worker in its place; the replay must apply it there too, not after the events it held."""
    names, db = scratch
    await ensure_topics(settings, names.all())
    s = db.settings.model_copy(update={"data_dir": tmp_path, "scenario_idle_release_s": 1e9,
                                       "scenario_lateness_s": 5})
    now = datetime.now(timezone.utc).replace(microsecond=0)

    def ev(kind: str, seconds_ago: float, n: int, **more) -> dict:
        return example(kind, n, occurred_at=(now - timedelta(seconds=seconds_ago)).isoformat(), account="acct-g",
                       email="gina@example.com", contact_id=9, **more)

    started, step = ev("automation_started", 100, 1), ev("automation_step_reached", 10, 2, step_id="s2")
    page, later = ev("page", 12, 3), ev("identify", 0, 4)  # the page view comes late, but within 5 s

    live, arrive = _live_worker(s, db, names)
    await arrive(started, step)
    read_topics = Replay._read

    async def the_page_arrives_after_the_main_pass(self, ranges):
        await read_topics(self, ranges)
        if not self._swapped:
            await arrive(page, later)  # the worker applies the page, then the step (its watermark passed both)

    monkeypatch.setattr(Replay, "_read", the_page_arrives_after_the_main_pass)
    plan = await plan_replay(s.kafka_bootstrap, names.sources(), None, None)
    report = await Replay(s, db, plan, live=live).run()
    assert report.swapped and report.left_to_worker == 1, report  # the identify, still held by the worker
    await live.drain()
    rows = db.rows("SELECT source_event_id, step_id, attribution FROM {db}.scenario_log FINAL ORDER BY occurred_at")
    assert rows == [(started["event_id"], "s1", "automation"), (page["event_id"], "s1", "enrollment"),
                    (step["event_id"], "s2", "automation"), (later["event_id"], "s2", "enrollment")], rows
