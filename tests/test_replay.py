"""Issue 6 through a real worker: replays rebuild every table exactly, dead letters are re-driven once."""
from __future__ import annotations

import asyncio
import json
import subprocess
import time
import uuid
from datetime import datetime, timedelta

import orjson
import pytest

from streams.produce import publish
from streams.simulate import SimulationSpec, generate
from streams.topics import Topics, ensure_topics
from tests import story
from tests.examples import example, keyed, wait_drained
from tests.support import AUTOLOGS, OUTSIDE, WorkerProcess, run_cli

SNAPSHOTS = {
    "event_log": "SELECT * EXCEPT (ingested_at) FROM {db}.event_log FINAL ORDER BY account_id, event_id",
    "scenario_log": "SELECT * EXCEPT (ingested_at) FROM {db}.scenario_log FINAL "
                    "ORDER BY account_id, scenario_id, occurred_at, source_event_id",
    "enrollment_state": "SELECT * FROM {db}.enrollment_state FINAL ORDER BY account_id, scenario_id, contact_key",
    "event_log_by_time": "SELECT * FROM {db}.event_log_by_time FINAL ORDER BY account_id, event_id",
}
COPY_COLUMNS = ("account_id, occurred_at, event_id, event_type, event_name, contact_id, email, ip, campaign_id, "
                "template_id, message_id, automation_id, step_id, url, source_name")  # 0006_event_log_by_time.sql
# Rows of the dumps' time-ordered copy that differ from event_log (either way): none, after any replay.
COPY_DIFF = ("SELECT count() AS n FROM ((SELECT {c} FROM {db}.event_log FINAL EXCEPT SELECT {c} FROM "
             "{db}.event_log_by_time FINAL) UNION ALL (SELECT {c} FROM {db}.event_log_by_time FINAL EXCEPT "
             "SELECT {c} FROM {db}.event_log FINAL))")


def copy_differences(worker: WorkerProcess) -> int:
    res = run_cli(worker.env, "sql", "--format", "json", COPY_DIFF.replace("{c}", COPY_COLUMNS))
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)["n"]



def snapshot(worker: WorkerProcess) -> dict[str, list[str]]:
    out = {}
    for table, query in SNAPSHOTS.items():
        res = run_cli(worker.env, "sql", "--format", "json", query)
        assert res.returncode == 0, res.stderr
        out[table] = res.stdout.splitlines()
    return out


def simulated(n_contacts: int) -> list[tuple[bytes, bytes]]:
    from schemas.events import partition_key

    spec = SimulationSpec(seed=5, contacts=n_contacts, accounts=2, start=story.T0.replace(hour=0))
    return [(partition_key(e["account_id"], e.get("email"), e.get("contact_id")), orjson.dumps(e))
            for e in generate(spec)]


@pytest.fixture
def worker_with_data(settings, tmp_root):
    names = Topics(f"{settings.topic_prefix}-replay-{uuid.uuid4().hex[:6]}")
    worker = WorkerProcess(tmp_root / names.prefix, names.prefix,
                           AUTOLOGS_CLICKHOUSE_DATABASE=f"db_{names.prefix.replace('-', '_')}")
    worker.start()

    async def feed(messages):
        await ensure_topics(settings, names.all())
        await publish(settings, names.events, messages)
        await wait_drained(settings.kafka_bootstrap, names.app_id, names.events)

    from tests.test_scenarios import keyed as story_keyed

    asyncio.run(feed(simulated(300) + [story_keyed(e) for e in story.phase_one()]))
    removal = run_cli(worker.env, "contacts", "remove", "--account", story.ACCOUNT, "--scenario", "sc-welcome",
                  "--at", story.REMOVAL_AT.isoformat(), story.BOB)
    assert removal.returncode == 0, removal.stderr
    asyncio.run(feed([story_keyed(e) for e in story.phase_two()]))
    asyncio.run(wait_drained(settings.kafka_bootstrap, names.app_id, names.commands))
    yield worker, names, feed
    worker.stop()


def test_replay_rebuilds_every_table_exactly_twice_over(worker_with_data):
    worker, _, _ = worker_with_data
    live = snapshot(worker)
    assert len(live["event_log_by_time"]) == len(live["event_log"]) and copy_differences(worker) == 0
    assert len(live["event_log"]) > 2000 and len(live["scenario_log"]) > 100 and len(live["enrollment_state"]) > 10
    none_yet = run_cli(worker.env, "replay", "--status")
    assert none_yet.returncode == 1 and "no replay has run in this worker" in none_yet.stderr, none_yet.stderr
    for attempt in (1, 2):
        out = run_cli(worker.env, "replay")
        assert out.returncode == 0, out.stderr
        report = json.loads(out.stdout)
        assert report["swapped"] and report["days_verified"] >= 1 and report["scenario_rows"] > 100
        # The rebuilt Faust-table states equal the live table's, contact by contact.
        assert report["states"]["different"] == 0 and report["states"]["contacts"] > 10, report["states"]
        status = run_cli(worker.env, "replay", "--status")  # how the worker's last replay ended
        assert status.returncode == 0 and json.loads(status.stdout)["swapped"], status.stderr
        rebuilt = snapshot(worker)
        assert copy_differences(worker) == 0, attempt  # the copy was rebuilt and swapped with the log
        for table in SNAPSHOTS:
            assert len(rebuilt[table]) == len(live[table]), (table, attempt)
            diff = [(orjson.loads(a), orjson.loads(b)) for a, b in zip(live[table], rebuilt[table]) if a != b]
            assert not diff, (f"replay {attempt}: {table} differs in {len(diff)} rows, e.g. "
                              f"{ {k: (v, diff[0][1][k]) for k, v in diff[0][0].items() if diff[0][1][k] != v} }")


def test_replay_beside_live_ingestion_loses_and_duplicates_nothing(worker_with_data, settings):
    worker, names, feed = worker_with_data
    more = [keyed(example("page", n, account="acct-live", email=f"l{n % 50}@example.com")) for n in range(3000)]

    async def both():
        replaying = asyncio.create_task(asyncio.to_thread(run_cli, worker.env, "replay"))
        for i in range(0, len(more), 300):  # live traffic keeps arriving while the replay runs
            await publish(settings, names.events, more[i:i + 300])
            await asyncio.sleep(0.05)
        result = await replaying
        await wait_drained(settings.kafka_bootstrap, names.app_id, names.events)
        return result

    out = asyncio.run(both())
    assert out.returncode == 0, out.stderr
    res = run_cli(worker.env, "sql", "--format", "json", "SELECT count() AS n, uniqExact(event_id) AS ids FROM "
                                                 "{db}.event_log FINAL WHERE account_id = 'acct-live'")
    assert json.loads(res.stdout) == {"n": 3000, "ids": 3000}
    res = run_cli(worker.env, "sql", "--format", "json", "SELECT count() - uniqExact(account_id, event_id) AS dup FROM "
                                                 "{db}.event_log FINAL")
    assert json.loads(res.stdout) == {"dup": 0}
    # Live rows and caught-up rows reached the swapped copy through its materialized view.
    assert copy_differences(worker) == 0


def test_a_worker_restarted_after_a_replay_swapped_finishes_that_replay(worker_with_data, settings, tmp_path,
                                                                       monkeypatch):
    """A replay stopped between its swap and its end owes the swapped-in tables its catch-up and last window;
    the restarted worker finishes it by itself (no `--resume` to remember)."""
    from autologs import migrate
    from autologs.clickhouse import ClickHouse
    from replay.plan import plan_replay
    from replay.run import Replay

    worker, names, _ = worker_with_data
    live = snapshot(worker)
    # The checkpoint a crash after the swap leaves: the same replay of the worker's topics, run here into a
    # scratch database, stopped as its catch-up begins.
    db = ClickHouse(settings.model_copy(update={"topic_prefix": names.prefix}),
                    database=f"scratch_{names.prefix.replace('-', '_')}")
    db.command("DROP DATABASE IF EXISTS {db}")
    migrate.migrate(db)

    class Crash(Exception):
        pass

    async def crash(self):
        raise Crash()

    monkeypatch.setattr(Replay, "_catch_up", crash)
    s = db.settings.model_copy(update={"data_dir": tmp_path})
    plan = asyncio.run(plan_replay(s.kafka_bootstrap, names.sources(), None, None))
    with pytest.raises(Crash):
        asyncio.run(Replay(s, db, plan).run())
    db.command("DROP DATABASE IF EXISTS {db}")
    worker.stop()
    checkpoint = worker.data_dir / "replay" / "checkpoint.json"
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    checkpoint.write_bytes((tmp_path / "replay" / "checkpoint.json").read_bytes())
    worker.start()
    deadline = time.monotonic() + 120
    while (status := run_cli(worker.env, "replay", "--status")).returncode != 0 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["swapped"] and report["scenario_rows"] > 0 and report["states"]["different"] == 0, report
    assert not checkpoint.exists() and "interrupted after its swap" in worker.log_tail()
    assert snapshot(worker) == live


def test_replay_refuses_an_empty_range(worker_with_data):
    worker, _, _ = worker_with_data
    out = run_cli(worker.env, "replay", "--in-place", "--from", "2099-01-01T00:00:00+00:00")
    assert out.returncode == 1 and "holds no message" in out.stderr
    status = run_cli(worker.env, "replay", "--status")  # how that refused replay ended
    assert status.returncode == 1 and "did not complete: " in status.stderr and "holds no message" in status.stderr
    assert "Refused" not in status.stderr and "Traceback" not in status.stderr, status.stderr
    out = run_cli(worker.env, "replay", "--from", "2020-01-01T00:00:00+00:00")
    assert out.returncode == 1 and "--in-place" in out.stderr
    # Another prefix than the worker's would replay the worker's topics, not the ones the caller named.
    out = run_cli({**worker.env, "AUTOLOGS_TOPIC_PREFIX": "someone-else"}, "replay", "--in-place")
    assert out.returncode == 1 and "reads the topics" in out.stderr and "someone-else" in out.stderr, out.stderr


def test_a_ranged_or_one_topic_replay_rewrites_only_the_event_log(worker_with_data):
    """A range holds only part of each contact's history (Bob was removed inside it, after steps before it):
    derived from nothing it would overwrite the scenario log and the states; it rewrites the event log only.
    A shadow replay of one topic would swap tables without the other's rows: refused."""
    worker, _, _ = worker_with_data
    before = snapshot(worker)
    out = run_cli(worker.env, "replay", "--in-place", "--from", (story.T0 + timedelta(minutes=3)).isoformat())
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["derived"] is False and report["events_written"] > 0 and report["scenario_rows"] == 0, report
    assert snapshot(worker) == before
    out = run_cli(worker.env, "replay", "--topics", "events")
    assert out.returncode == 1 and "reads both topics" in out.stderr, out.stderr
    assert snapshot(worker) == before


def test_dead_letters_redriven_land_once_or_return_once(settings, tmp_root):
    names = Topics(f"{settings.topic_prefix}-dlq-{uuid.uuid4().hex[:6]}")
    worker = WorkerProcess(tmp_root / names.prefix, names.prefix,
                           AUTOLOGS_CLICKHOUSE_DATABASE=f"db_{names.prefix.replace('-', '_')}").start()
    try:
        bad_email = example("form", 1, email="ann@@example.com")
        unknown = dict(example("form", 2), type="sms_delivered")

        async def feed():
            await ensure_topics(settings, names.all())
            await publish(settings, names.events, [keyed(example("form", 0)), (b"acct-1:x", orjson.dumps(bad_email)),
                                                   (b"acct-1:y", orjson.dumps(unknown))])
            await wait_drained(settings.kafka_bootstrap, names.app_id, names.events)

        asyncio.run(feed())
        # A worker stopped between sending a batch's dead letters and committing it sends them again: a copy
        # (same source message) is listed and re-driven once.
        from aiokafka import AIOKafkaConsumer

        async def copy_one_letter():
            consumer = AIOKafkaConsumer(names.dead_letters, bootstrap_servers=settings.kafka_bootstrap,
                                        auto_offset_reset="earliest", enable_auto_commit=False)
            await consumer.start()
            try:
                first = await asyncio.wait_for(consumer.getone(), 30)
            finally:
                await consumer.stop()
            await publish(settings, names.dead_letters, [(first.key, first.value)],
                          headers_for=lambda i: list(first.headers))

        asyncio.run(copy_one_letter())
        listed = run_cli(worker.env, "dlq", "list")
        assert listed.returncode == 0
        lines = [line.split("\t") for line in listed.stdout.splitlines()]
        assert len(lines) == 2
        shown = run_cli(worker.env, "dlq", "show", lines[0][0])
        assert shown.returncode == 0 and "source_timestamp: 20" in shown.stdout and "reason:" in shown.stdout
        by_type = {line[2]: line[0] for line in lines}
        fix = tmp_root / f"{names.prefix}-fix.jsonl"
        # A correction that is still invalid, or for no letter, is refused whole: nothing is sent.
        fix.write_text(json.dumps({"id": by_type["form"], "value": {**bad_email, "email": "ann@example.com",
                                                                   "colour": 1}}) + "\n")
        out = run_cli(worker.env, "dlq", "redrive", "--fix", str(fix))
        assert out.returncode == 1 and "still invalid: colour" in out.stderr, out.stdout + out.stderr
        out = run_cli(worker.env, "dlq", "redrive", "--fix", str(fix), "--dry-run")  # listed, not refused
        assert out.returncode == 0 and f"{by_type['form']}\tstill invalid: colour" in out.stdout, \
            out.stdout + out.stderr
        out = run_cli(worker.env, "dlq", "redrive", "--id", "9:999")
        assert out.returncode == 1 and "9:999: no such dead letter" in out.stderr, out.stdout + out.stderr
        fix.write_text(json.dumps({"id": by_type["form"], "value": {**bad_email, "email": "ann@example.com"}}) + "\n")
        # The corrected payload lands, once: two operators re-driving it at once with two corrections (times a
        # minute apart, which would be two rows of the log) are served one after the other, and the second
        # is refused (both used to be sent). The still-invalid one is sent back as it is, below.
        other = tmp_root / f"{names.prefix}-fix-other.jsonl"
        later = (datetime.fromisoformat(bad_email["occurred_at"]) + timedelta(minutes=1)).isoformat()
        other.write_text(json.dumps({"id": by_type["form"], "value": {**bad_email, "email": "ann@example.com",
                                                                     "occurred_at": later}}) + "\n")
        both = [subprocess.Popen([AUTOLOGS, "dlq", "redrive", "--fix", str(f)], env=worker.env, text=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=OUTSIDE) for f in (fix, other)]
        outs = [(*p.communicate(timeout=300), p.returncode) for p in both]
        assert sorted(rc for _, _, rc in outs) == [0, 1], outs
        assert [o.startswith("1 re-driven (1 with a fix)") for o, _, rc in outs if rc == 0] == [True], outs
        assert ["re-driven already" in e for _, e, rc in outs if rc == 1] == [True], outs
        out = run_cli(worker.env, "dlq", "redrive", "--fix", str(fix))  # the same correction again
        assert out.returncode == 1 and "re-driven already" in out.stderr, out.stdout + out.stderr

        async def key_of_the_correction():  # the contact's key, not the dead letter's ("acct-1:x")
            consumer = AIOKafkaConsumer(names.events, bootstrap_servers=settings.kafka_bootstrap,
                                        auto_offset_reset="earliest", enable_auto_commit=False)
            await consumer.start()
            try:
                batches = await consumer.getmany(timeout_ms=5000)
            finally:
                await consumer.stop()
            return [r.key for records in batches.values() for r in records if r.headers and b"ann@example.com" in r.value]

        assert asyncio.run(key_of_the_correction()) == [b"acct-1:ann@example.com"]
        # A dry run says what would come back, and sends (and marks) nothing: the real run still sends it.
        out = run_cli(worker.env, "dlq", "redrive", "--type", "sms_delivered", "--dry-run")
        assert out.returncode == 0 and f"{by_type['sms_delivered']}\tstill invalid: unknown event type " \
            "'sms_delivered'" in out.stdout, out.stdout + out.stderr
        assert "dry run, nothing sent: 1 would be re-driven (1 still invalid;" in out.stdout, out.stdout
        out = run_cli(worker.env, "dlq", "redrive", "--type", "sms_delivered")
        assert out.stdout.startswith("1 re-driven"), out.stdout
        asyncio.run(wait_drained(settings.kafka_bootstrap, names.app_id, names.events))
        # Again: nothing is sent twice, and the one that failed its re-drive is not looped.
        out = run_cli(worker.env, "dlq", "redrive")
        assert out.stdout.startswith("0 re-driven") and "2 already re-driven, 1 that failed a re-drive" in out.stdout
        asyncio.run(wait_drained(settings.kafka_bootstrap, names.app_id, names.events))
        listed = run_cli(worker.env, "dlq", "list").stdout.splitlines()
        again = [line for line in listed if "failed again" in line]
        assert len(listed) == 3 and len(again) == 1 and "sms_delivered" in again[0]
        assert again[0].endswith(f"(the re-drive of {by_type['sms_delivered']}, failed again)"), again
        assert listed[-1] == again[0]  # oldest first, whatever partition each letter is in
        assert sum(line.endswith("(re-driven)") for line in listed) == 2  # the two first letters are marked
        res = run_cli(worker.env, "sql", "--format", "json",
                  "SELECT event_id, email, count() AS n FROM {db}.event_log FINAL GROUP BY event_id, email "
                  "ORDER BY event_id")
        assert [json.loads(line) for line in res.stdout.splitlines()] == [
            {"event_id": "ex-form-0", "email": "contact0@example.com", "n": 1},
            {"event_id": "ex-form-1", "email": "ann@example.com", "n": 1}]
    finally:
        worker.stop()
