"""Issue 3, end to end with a real worker process, a real broker and real chdb."""
from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import uuid
from datetime import datetime, timezone

import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from processors.deadletters import parse_dead_letter
from schemas.events import EVENT_TYPES
from streams.produce import publish
from streams.topics import Topics, ensure_topics, group_lag
from tests.examples import example, keyed, wait_drained
from tests.support import WorkerProcess


async def read_topic(bootstrap: str, topic: str, count: int, timeout: float = 60.0) -> list:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest",
                                enable_auto_commit=False)
    await consumer.start()
    out = []
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while len(out) < count and asyncio.get_running_loop().time() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for tp, records in batch.items():
                out.extend(records)
    finally:
        await consumer.stop()
    return out


@pytest.fixture
def worker_factory(tmp_root, settings):
    made: list[WorkerProcess] = []

    def make(prefix: str, name: str = "w", **env) -> WorkerProcess:
        w = WorkerProcess(tmp_root / f"{prefix}-{name}", prefix,
                          AUTOLOGS_CLICKHOUSE_DATABASE=f"db_{prefix.replace('-', '_')}", **env)
        made.append(w)
        return w

    yield make
    for w in made:
        w.stop()


async def test_every_event_type_lands_with_all_fields_and_bad_input_is_dead_lettered(settings, worker_factory):
    names = Topics(f"{settings.topic_prefix}-all-{uuid.uuid4().hex[:6]}")
    await ensure_topics(settings, names.all())
    good = [example(t, n) for n, t in enumerate(EVENT_TYPES)]
    bad = [
        b"{not json", b"[1, 2, 3]", b"42", orjson.dumps({**example("form", 90), "type": "teleported"}),
        orjson.dumps({k: v for k, v in example("form", 91).items() if k not in ("email", "contact_id")}),
        orjson.dumps(example("form", 92, email="not-an-email")),
        orjson.dumps(example("track", 93, properties={"blob": "x" * 60_000})),
        orjson.dumps(example("page", 94, occurred_at="2099-01-01T00:00:00Z")),
        orjson.dumps(example("templates_opened", 95, template_id="twelve")),
        b"",
    ]
    # Bad messages interleaved with good ones: the stream must go on after each.
    messages = []
    for i, ev in enumerate(good):
        messages.append(keyed(ev))
        if i < len(bad):
            messages.append((b"acct-1:junk", bad[i]))
    await publish(settings, names.events, messages)

    worker = worker_factory(names.prefix).start()
    worker.wait_until(lambda h: h["messages"] >= len(messages), 120, "all messages processed")
    await wait_drained(settings.kafka_bootstrap, names.app_id, names.events)
    dead = await read_topic(settings.kafka_bootstrap, names.dead_letters, len(bad))
    worker.stop()

    # Dead letters: the original bytes, a reason in words, and where they came from.
    letters = [parse_dead_letter(r.headers, r.key, r.value, r.partition, r.offset) for r in dead]
    assert sorted(l.original or b"" for l in letters) == sorted(bad)
    reasons = {bytes(l.original or b""): l.reason for l in letters}
    assert "not valid JSON" in reasons[b"{not json"]
    assert "not a JSON object" in reasons[b"[1, 2, 3]"]
    assert "unknown event type" in reasons[bad[3]]
    assert "no contact" in reasons[bad[4]]
    assert "email" in reasons[bad[5]]
    assert "50 KB" in reasons[bad[6]]
    assert "future" in reasons[bad[7]]
    assert "template_id" in reasons[bad[8]]
    assert reasons[b""] == "empty message"
    assert all(l.source_topic == names.events and l.source_offset >= 0 for l in letters)

    rows = worker.sql("SELECT * FROM {db}.event_log FINAL ORDER BY occurred_at")
    assert [r["event_id"] for r in rows] == [e["event_id"] for e in good]
    for ev, row in zip(good, rows):
        assert row["event_type"] == ev["type"]
        assert row["account_id"] == ev["account_id"]
        assert row["email"] == ev["email"] and row["contact_id"] == ev["contact_id"]
        assert datetime.fromisoformat(row["occurred_at"]).replace(tzinfo=timezone.utc) == \
            datetime.fromisoformat(ev["occurred_at"])
        # The IP rule: absent means the event was triggered internally, stored empty.
        assert row["ip"] == ev.get("ip", "")
        for field in ("message_id", "url", "form_id", "list_id", "automation_id", "step_id", "start_id",
                      "event_name"):
            assert row[field] == ev.get(field, ""), field
        for field in ("template_id", "campaign_id"):
            assert row[field] == ev.get(field, 0), field
        assert (orjson.loads(row["properties"]) if row["properties"] else {}) == ev.get("properties", {})
        details = orjson.loads(row["details"]) if row["details"] else {}
        for field, value in ev.items():
            if (field.endswith("_name") and field != "event_name") or field in ("reason", "action", "wait_for", "removed_by", "page_title",
                                                    "entry_points"):
                assert details.get(field) == value, field
        expected_name = next((ev[f] for f in ("form_name", "list_name", "campaign_name", "template_name",
                                              "automation_name", "event_name", "page_title", "url") if ev.get(f)), "")
        assert row["source_name"] == expected_name


async def test_sigkill_mid_stream_gives_every_event_exactly_once(settings, worker_factory):
    names = Topics(f"{settings.topic_prefix}-kill-{uuid.uuid4().hex[:6]}")
    await ensure_topics(settings, names.all())
    total = 100_000
    kinds = ["page", "track", "templates_opened", "form"]
    await publish(settings, names.events, (keyed(example(kinds[n % 4], n, email=f"c{n % 5000}@example.com"))
                                           for n in range(total)))
    # Commits far apart: the kill surely falls between a write and the commit of its offsets.
    worker = worker_factory(names.prefix, AUTOLOGS_SINK_MAX_ROWS="5000", AUTOLOGS_COMMIT_INTERVAL_S="60").start()
    before_kill = worker.wait_until(lambda h: h["rows_written"] >= 20_000, 180, "a fifth of the stream written")
    worker.kill()  # SIGKILL: no chance to commit what it wrote since the last commit

    restarted = worker_factory(names.prefix, "again", AUTOLOGS_SINK_MAX_ROWS="5000")
    restarted.data_dir = worker.data_dir  # same ClickHouse data, as after a real crash
    restarted.env["AUTOLOGS_DATA_DIR"] = str(worker.data_dir)
    restarted.start()
    await wait_drained(settings.kafka_bootstrap, names.app_id, names.events, timeout=300)
    after_restart = restarted.health()
    restarted.stop()
    # The crash really re-delivered: rows written before the kill were read and written again.
    assert before_kill["rows_written"] + after_restart["messages"] > total

    [stats] = restarted.sql("SELECT count() AS visible, uniqExact(event_id) AS distinct_ids, "
                            "min(event_id LIKE 'ex-%') AS ours FROM {db}.event_log FINAL")
    assert stats == {"visible": total, "distinct_ids": total, "ours": 1}


def _immutable(path, on: bool) -> None:
    """chattr +i: even root cannot create files there, so ClickHouse's inserts really fail."""
    subprocess.run(["chattr", "-R", "-f", "+i" if on else "-i", str(path)], check=False)


def _chattr_works(tmp_path) -> bool:
    probe = tmp_path / "probe"
    probe.mkdir()
    if shutil.which("chattr") is None:
        return False
    _immutable(probe, True)
    try:
        (probe / "x").touch()
        return False
    except OSError:
        return True
    finally:
        _immutable(probe, False)


async def test_clickhouse_unavailable_then_back_loses_and_duplicates_nothing(settings, worker_factory, tmp_path):
    if not _chattr_works(tmp_path):
        message = "this test makes chdb's data read-only with chattr +i (root on ext4 or similar)"
        if os.environ.get("CI"):
            pytest.fail(message + "; CI must be able to run it")
        pytest.skip(message)
    names = Topics(f"{settings.topic_prefix}-down-{uuid.uuid4().hex[:6]}")
    await ensure_topics(settings, names.all())
    worker = worker_factory(names.prefix, AUTOLOGS_SINK_RETRY_MAX_S="0.5").start()
    total = 20_000
    first = [keyed(example("page", n, email=f"d{n % 300}@example.com")) for n in range(total // 2)]
    second = [keyed(example("track", n, email=f"d{n % 300}@example.com")) for n in range(total // 2, total)]
    await publish(settings, names.events, first)
    worker.wait_until(lambda h: h["rows_written"] >= total // 2, 120, "the first half written")

    chdb_dir = worker.data_dir / "chdb"
    _immutable(chdb_dir, True)  # ClickHouse can no longer write a part
    try:
        await publish(settings, names.events, second)
        down = worker.wait_until(lambda h: h["sink_failures"] >= 3, 120, "inserts failing")
        assert down["rows_written"] == total // 2, "nothing may be written while ClickHouse is down"
        assert down["status"].startswith("failing: inserts into event_log"), down["status"]
        assert await group_lag(settings.kafka_bootstrap, names.app_id, [names.events]) > 0, \
            "offsets of unwritten events must not be committed"
    finally:
        _immutable(chdb_dir, False)
    back = worker.wait_until(lambda h: h["rows_written"] >= total, 120, "the backlog written after recovery")
    assert back["status"] == "ok"
    await wait_drained(settings.kafka_bootstrap, names.app_id, names.events)
    worker.stop()
    [stats] = worker.sql("SELECT count() AS visible, uniqExact(event_id) AS ids FROM {db}.event_log FINAL")
    assert stats == {"visible": total, "ids": total}


async def test_a_second_worker_joining_mid_stream_loses_nothing(settings, worker_factory):
    """A rebalance moves partitions between live workers: what each held or had fetched is read again by
    the new owner, nothing stays uncommitted, and every event lands (each worker has its own chdb here,
    so an event re-read after the move may be in both stores: the union is checked)."""
    names = Topics(f"{settings.topic_prefix}-join-{uuid.uuid4().hex[:6]}")
    await ensure_topics(settings, names.all())

    def events(first: int, count: int):
        return (keyed(example(("page", "track")[n % 2], n, email=f"j{n % 3000}@example.com"))
                for n in range(first, first + count))

    chunk, sent = 20_000, 0
    await publish(settings, names.events, events(sent, chunk))
    sent += chunk
    first = worker_factory(names.prefix, "a", AUTOLOGS_SINK_MAX_ROWS="2000").start()
    first.wait_until(lambda h: h["rows_written"] >= 5_000, 180, "the first worker under way")
    second = worker_factory(names.prefix, "b", AUTOLOGS_SINK_MAX_ROWS="2000").start()
    deadline = asyncio.get_running_loop().time() + 120
    while second.health()["messages"] == 0:  # keep the stream going until the rebalance gave it partitions
        assert asyncio.get_running_loop().time() < deadline, "the second worker never got partitions"
        await publish(settings, names.events, events(sent, chunk))
        sent += chunk
        await asyncio.sleep(1)
    await publish(settings, names.events, events(sent, chunk))  # and some more after the move
    sent += chunk
    await wait_drained(settings.kafka_bootstrap, names.app_id, names.events, timeout=300)
    assert first.health()["messages"] > 0 and second.health()["messages"] > 0
    ids = set()
    for w in (first, second):
        w.stop()
        ids |= {r["event_id"] for r in w.sql("SELECT DISTINCT event_id FROM {db}.event_log")}
    assert len(ids) == sent


def test_produce_sends_the_valid_lines_and_keeps_the_rejected_ones_with_their_reason(settings, tmp_path):
    from tests.support import run_cli

    prefix = f"{settings.topic_prefix}-produce-{uuid.uuid4().hex[:6]}"
    source = tmp_path / "events.jsonl"
    bad = dict(example("track", 2), event_name="order\tcreated")
    source.write_bytes(b"\n".join(orjson.dumps(e) for e in (example("page", 0), bad, example("form", 1))) + b"\n")
    rejects = tmp_path / "rejects.jsonl"
    env = {**os.environ, "AUTOLOGS_TOPIC_PREFIX": prefix, "AUTOLOGS_DATA_DIR": str(tmp_path / "data")}
    out = run_cli(env, "produce", str(source), "--rejects", str(rejects))
    assert out.returncode == 1 and "2 event(s) sent" in out.stdout and "1 line(s) rejected" in out.stdout, out.stderr
    assert "line 2: rejected: event_name" in out.stderr
    [kept] = [orjson.loads(line) for line in rejects.read_bytes().splitlines()]
    assert kept["line"] == 2 and kept["reason"].startswith("event_name") and orjson.loads(kept["value"]) == bad


def _validation_children(worker: WorkerProcess) -> list[int]:
    """The worker's spawned children (its validation process)."""
    pids = []
    for task in os.listdir(f"/proc/{worker.proc.pid}/task"):
        with open(f"/proc/{worker.proc.pid}/task/{task}/children") as f:
            pids += [int(p) for p in f.read().split()]
    return [p for p in pids if b"multiprocessing.spawn" in open(f"/proc/{p}/cmdline", "rb").read()]


async def test_the_validation_process_validates_and_its_death_loses_nothing(settings, worker_factory):
    names = Topics(f"{settings.topic_prefix}-vproc-{uuid.uuid4().hex[:6]}")
    await ensure_topics(settings, names.all())
    first = [example("page", n) for n in range(200)]
    second = [example("track", 1000 + n) for n in range(200)]
    bad = orjson.dumps(example("form", 5000, email="not-an-email"))
    await publish(settings, names.events, [keyed(e) for e in first] + [(b"acct-1:junk", bad)])

    worker = worker_factory(names.prefix).start()
    health = worker.wait_until(lambda h: h["messages"] >= 201, 120, "the first messages processed")
    assert health["validation_processes"] == 1 and health["dead_letters"] == 1
    (child,) = _validation_children(worker)  # the batches went through it
    os.kill(child, 9)
    await publish(settings, names.events, [keyed(e) for e in second] + [(b"acct-1:junk", bad)])
    health = worker.wait_until(lambda h: h["messages"] >= 402, 120, "the second messages processed")
    assert health["validation_restarts"] == 1 and not health["validation_given_up"] and health["dead_letters"] == 2
    await publish(settings, names.events, [keyed(example("page", 9000))])
    worker.wait_until(lambda h: h["messages"] >= 403, 120, "a message after the restart")
    (new_child,) = _validation_children(worker)
    assert new_child != child
    await wait_drained(settings.kafka_bootstrap, names.app_id, names.events)
    worker.stop()
    rows = worker.sql("SELECT event_id FROM {db}.event_log FINAL")
    expected = [e["event_id"] for e in first + second] + [example("page", 9000)["event_id"]]
    assert sorted(r["event_id"] for r in rows) == sorted(expected)


async def test_a_quiet_stream_is_committed_once_its_held_events_are_written(settings, worker_factory):
    """The idle release commits at once: a restart re-reads nothing of a stream that went quiet, whatever
    the commit interval (here one minute)."""
    names = Topics(f"{settings.topic_prefix}-quiet-{uuid.uuid4().hex[:6]}")
    await ensure_topics(settings, names.all())
    events = [example("page", n) for n in range(30)]
    await publish(settings, names.events, [keyed(e) for e in events])
    worker = worker_factory(names.prefix, AUTOLOGS_COMMIT_INTERVAL_S="60").start()
    worker.wait_until(lambda h: h["messages"] >= len(events) and h["held"] == 0, 60, "the events released")
    await wait_drained(settings.kafka_bootstrap, names.app_id, names.events, timeout=20)
