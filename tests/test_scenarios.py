"""Issue 4 end to end: a scripted story through a real worker gives exactly the expected tables,
whatever the arrival order, delivered twice, or across a worker restart; manual removals."""
from __future__ import annotations

import subprocess
import uuid
from datetime import timedelta

import orjson
import pytest

from schemas.events import partition_key
from streams.produce import publish
from streams.topics import Topics, ensure_topics
from tests import story
from tests.examples import wait_drained
from tests.support import WorkerProcess, run_cli

LATENESS = timedelta(minutes=5)


def keyed(ev: dict) -> tuple[bytes, bytes]:
    return partition_key(ev["account_id"], ev.get("email"), ev.get("contact_id")), orjson.dumps(ev)



def live_sql(worker: WorkerProcess, query: str) -> list[dict]:
    """Read through the running worker (it holds the embedded engine)."""
    out = run_cli(worker.env, "sql", "--format", "json", query)
    assert out.returncode == 0, out.stderr
    return [orjson.loads(line) for line in out.stdout.splitlines() if line.strip()]


class Story:
    def __init__(self, settings, tmp_root, name: str):
        self.settings = settings
        self.names = Topics(f"{settings.topic_prefix}-{name}-{uuid.uuid4().hex[:6]}")
        self.tmp_root = tmp_root
        self.workers: list[WorkerProcess] = []

    def worker(self, data_dir=None) -> WorkerProcess:
        w = WorkerProcess(data_dir or self.tmp_root / self.names.prefix, self.names.prefix,
                          AUTOLOGS_CLICKHOUSE_DATABASE=f"db_{self.names.prefix.replace('-', '_')}",
                          AUTOLOGS_SCENARIO_LATENESS_S=str(LATENESS.total_seconds()))
        self.workers.append(w)
        return w.start()

    async def publish(self, events: list[dict]) -> None:
        await ensure_topics(self.settings, self.names.all())
        await publish(self.settings, self.names.events, [keyed(e) for e in events])

    async def drained(self) -> None:
        for topic in (self.names.events, self.names.commands):
            await wait_drained(self.settings.kafka_bootstrap, self.names.app_id, topic)

    def remove_bob(self, worker: WorkerProcess) -> subprocess.CompletedProcess:
        return run_cli(worker.env, "contacts", "remove", "--account", story.ACCOUNT, "--scenario", "sc-welcome",
                   "--at", story.REMOVAL_AT.isoformat(), "--by", "ops@example.com",
                   story.BOB, story.ANN, story.DAN)

    def tables(self, worker: WorkerProcess) -> tuple[list[tuple], list[tuple]]:
        return (story.normalize(live_sql(worker, story.SCENARIO_LOG_QUERY)),
                story.normalize(live_sql(worker, story.ENROLLMENT_QUERY)))

    def stop(self) -> None:
        for w in self.workers:
            w.stop()


@pytest.fixture
def make_story(settings, tmp_root):
    made = []

    def make(name: str) -> Story:
        s = Story(settings, tmp_root, name)
        made.append(s)
        return s

    yield make
    for s in made:
        s.stop()


async def run_story(s: Story, first: list[dict], second: list[dict], restart_after: int | None = None):
    worker = s.worker()
    if restart_after is not None:
        await s.publish(first[:restart_after])
        await s.drained()
        worker.kill()  # SIGKILL: the table must come back from its changelog
        worker = s.worker(worker.data_dir)
        first = first[restart_after:]
    await s.publish(first)
    await s.drained()
    removal = s.remove_bob(worker)
    await s.publish(second)
    await s.drained()
    return worker, removal


async def test_story_gives_exactly_the_expected_tables_and_reports_removals(make_story):
    s = make_story("story")
    worker, removal = await run_story(s, story.phase_one(), story.phase_two())
    # Bob was active: removed. Ann had exited, Dan never entered: reported one by one.
    assert removal.returncode == 1, removal.stderr
    assert "removed: bob@example.com" in removal.stdout
    assert "not removed: ann@example.com: not in this scenario any more (exited)" in removal.stderr
    assert "not removed: dan@example.com: not in this scenario" in removal.stderr
    scenario_log, enrollments = s.tables(worker)
    assert scenario_log == story.EXPECTED_SCENARIO_LOG
    assert enrollments == story.EXPECTED_ENROLLMENTS
    in_scenarios = live_sql(worker, "SELECT email, scenario_id, step_id, status FROM {db}.enrollment_state FINAL "
                                    "WHERE account_id = 'acct-story' AND status IN ('active', 'waiting')")
    assert in_scenarios == [{"email": story.CAT, "scenario_id": "sc-cart", "step_id": "c2", "status": "active"}]
    # The removal is an event too, rendered from the catalogue.
    [removed] = live_sql(worker, "SELECT event_type, email, automation_id, step_id FROM {db}.event_log FINAL "
                                 "WHERE event_type = 'automation_removed'")
    assert removed == {"event_type": "automation_removed", "email": story.BOB, "automation_id": "sc-welcome",
                       "step_id": "s2"}


@pytest.mark.parametrize("seed", [7, 2026])
async def test_another_interleaving_with_late_events_gives_the_same_tables(make_story, seed):
    s = make_story(f"order{seed}")
    first = story.interleave(story.phase_one(), seed, LATENESS)
    assert first != story.phase_one()
    worker, _ = await run_story(s, first, story.interleave(story.phase_two(), seed, LATENESS))
    assert s.tables(worker) == (story.EXPECTED_SCENARIO_LOG, story.EXPECTED_ENROLLMENTS)


async def test_the_story_delivered_twice_gives_the_same_tables(make_story):
    s = make_story("twice")
    twice = story.phase_one() + story.interleave(story.phase_one(), 3, LATENESS)
    worker, _ = await run_story(s, twice, story.phase_two() * 2)
    log, enrollments = s.tables(worker)
    assert log == story.EXPECTED_SCENARIO_LOG, set(log) ^ set(story.EXPECTED_SCENARIO_LOG)
    assert enrollments == story.EXPECTED_ENROLLMENTS, set(enrollments) ^ set(story.EXPECTED_ENROLLMENTS)


async def test_a_worker_killed_mid_story_recovers_its_table(make_story):
    s = make_story("restart")
    worker, _ = await run_story(s, story.phase_one(), story.phase_two(), restart_after=10)
    assert s.tables(worker) == (story.EXPECTED_SCENARIO_LOG, story.EXPECTED_ENROLLMENTS)


async def test_removal_of_51_contacts_is_refused_whole(make_story):
    s = make_story("fiftyone")
    worker = s.worker()
    await s.publish(story.phase_one())
    await s.drained()
    out = run_cli(worker.env, "contacts", "remove", "--account", story.ACCOUNT, "--scenario", "sc-cart",
              story.CAT, *[f"c{n}@example.com" for n in range(50)])
    assert out.returncode == 2
    assert "51 contacts given; at most 50 per request" in out.stderr and "Nothing was removed" in out.stderr
    # A future time would keep the contact "removed" until then, whatever its scenario does meanwhile.
    out = run_cli(worker.env, "contacts", "remove", "--account", story.ACCOUNT, "--scenario", "sc-cart",
                  "--at", "2099-01-01T00:00:00Z", story.CAT)
    assert out.returncode == 2 and "is in the future" in out.stderr and "Nothing was removed" in out.stderr
    out = run_cli(worker.env, "contacts", "remove", "--account", story.ACCOUNT, "--scenario", "sc-nope", story.CAT)
    assert out.returncode == 2 and "scenario 'sc-nope' has no contacts in account" in out.stderr, out.stderr
    # Before the enrollment's last change: the log would show a removal its state had already moved past.
    out = run_cli(worker.env, "contacts", "remove", "--account", story.ACCOUNT, "--scenario", "sc-cart",
                  "--at", "2020-01-01T00:00:00Z", story.CAT)
    assert out.returncode == 1 and f"not removed: {story.CAT}: its enrollment last changed at" in out.stderr, out.stderr
    assert "0 contact(s) removed" in out.stdout
    await s.drained()
    [cat] = live_sql(worker, "SELECT status FROM {db}.enrollment_state FINAL WHERE email = 'cat@example.com'")
    assert cat == {"status": "active"}


async def test_a_removal_without_a_worker_says_it_is_queued_and_applies_when_one_starts(make_story):
    s = make_story("queued")
    worker = s.worker()
    await s.publish(story.phase_one())
    await s.drained()
    worker.stop()
    out = run_cli(worker.env, "contacts", "remove", "--account", story.ACCOUNT, "--scenario", "sc-cart", story.CAT)
    assert out.returncode == 0, out.stderr
    assert f"queued: {story.CAT}" in out.stdout and "no worker runs with this data dir" in out.stderr, out.stdout
    worker = s.worker(worker.data_dir)
    await s.drained()
    [cat] = live_sql(worker, "SELECT status FROM {db}.enrollment_state FINAL WHERE email = 'cat@example.com'")
    assert cat == {"status": "removed"}


async def test_a_contacts_state_is_saved_to_the_partition_of_its_events(make_story):
    """Producers may use another partitioner than Kafka's default (librdkafka's is CRC32): the state
    goes to the changelog partition of the contact's events, which is the one its reader recovers."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.partitioner import murmur2

    s = make_story("copart")
    n = s.settings.topic_partitions
    worker = s.worker()
    await ensure_topics(s.settings, s.names.all())
    expected: dict[bytes, int] = {}
    producer = AIOKafkaProducer(bootstrap_servers=s.settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for ev in story.phase_one():
            key, value = keyed(ev)
            expected[key] = ((murmur2(key) & 0x7FFFFFFF) + 1) % n  # never the default partitioner's choice
            await producer.send_and_wait(s.names.events, value, key=key, partition=expected[key])
    finally:
        await producer.stop()
    await s.drained()
    worker.stop()  # the changelog is flushed

    consumer = AIOKafkaConsumer(f"{s.names.app_id}-enrollments-changelog", bootstrap_servers=s.settings.kafka_bootstrap,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    saved: dict[bytes, set[int]] = {}
    try:
        while True:
            batch = await consumer.getmany(timeout_ms=2000)
            if not batch:
                break
            for tp, records in batch.items():
                for r in records:
                    saved.setdefault(r.key, set()).add(tp.partition)
    finally:
        await consumer.stop()
    assert saved, "no contact state was saved"
    assert {k: p for k, p in saved.items()} == {k: {expected[k]} for k in saved}


async def test_a_held_event_is_never_passed_by_a_commit_and_survives_a_kill(make_story):
    """The reorder buffer holds a fresh automation_started while older events behind it (later offsets) are
    released and finished at once; the partition never goes quiet. A commit must not pass the held event:
    killed and restarted, the worker reads it again and derives it (found in review: it was lost)."""
    import asyncio
    from datetime import datetime, timezone

    from tests.examples import example

    s = make_story("held")
    worker = s.worker()
    contact = f"held-{uuid.uuid4().hex[:6]}@example.com"
    now = datetime.now(timezone.utc)
    old = story.T0  # far older than the start: released as soon as they come

    def page(n: int) -> dict:
        return example("page", 0, account="acct-held", email=contact, event_id=f"held-page-{n}",
                       occurred_at=(old + timedelta(seconds=n)).isoformat())

    start = example("automation_started", 0, account="acct-held", email=contact, event_id="held-start",
                    occurred_at=(now - timedelta(seconds=5)).isoformat(), automation_id="sc-held",
                    automation_name="Held", start_id="", entry_points=1)
    await s.publish([page(0)])
    await wait_drained(s.settings.kafka_bootstrap, s.names.app_id, s.names.events)
    await s.publish([start] + [page(n) for n in range(1, 201)])
    for round_ in range(6):  # the partition stays busy: the start stays held
        await asyncio.sleep(0.4)
        await s.publish([page(1000 + 50 * round_ + n) for n in range(50)])
    assert (worker.health() or {}).get("held", 0) >= 1
    worker.kill()
    worker = s.worker(worker.data_dir)
    await s.drained()
    rows = live_sql(worker, "SELECT workflow_point FROM {db}.scenario_log FINAL WHERE account_id = 'acct-held'")
    assert rows == [{"workflow_point": "started"}], rows
    [state] = live_sql(worker, "SELECT status FROM {db}.enrollment_state FINAL WHERE account_id = 'acct-held'")
    assert state == {"status": "active"}
