"""Issue 2: the real broker answers, topics carry bytes, every table can be written and read."""
from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import uuid
from datetime import datetime

import pytest
from aiokafka import AIOKafkaConsumer

from autologs import broker
from schemas.rows import EVENT_LOG_COLUMNS, Source, event_log_row
from schemas.events import EVENT_ADAPTER
from streams.produce import publish
from streams.topics import ensure_topics
from tests.support import run_cli


def test_broker_status_cli_answers(kafka_bootstrap):
    out = run_cli({**os.environ, "AUTOLOGS_KAFKA_PORT": kafka_bootstrap.rsplit(":", 1)[1]}, "broker", "status")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "answers" in out.stdout and "does not" not in out.stdout


def test_a_cluster_id_never_starts_with_a_dash(monkeypatch):
    """The storage tool reads "-t -xyz" as a missing value: one random id in 64 started with '-'."""
    drawn = iter([uuid.UUID(bytes=b"\xf8" + b"\x00" * 15), uuid.UUID(bytes=b"\x01" * 16)])
    monkeypatch.setattr(broker.uuid, "uuid4", lambda: next(drawn))
    cluster_id = broker.new_cluster_id()
    assert not cluster_id.startswith("-") and len(cluster_id) == 22, cluster_id
    assert next(drawn, None) is None, "the id starting with '-' was drawn and refused"


def test_settings_bootstrap_follows_the_broker_port_and_bad_values_are_named(monkeypatch):
    from autologs.config import BadSettings, Settings, get_settings

    for name in [k for k in os.environ if k.startswith("AUTOLOGS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AUTOLOGS_KAFKA_PORT", "9192")
    assert Settings().kafka_bootstrap == "127.0.0.1:9192"  # not 9092, where another broker may answer
    monkeypatch.setenv("AUTOLOGS_KAFKA_BOOTSTRAP", "kafka:29092")
    assert Settings().kafka_bootstrap == "kafka:29092"
    monkeypatch.delenv("AUTOLOGS_KAFKA_PORT")
    monkeypatch.delenv("AUTOLOGS_KAFKA_BOOTSTRAP")
    assert Settings().kafka_bootstrap == "127.0.0.1:9092"
    for name, value, words in [("AUTOLOGS_TOPIC_PARTITIONS", "0", "greater than or equal to 1"),
                               ("AUTOLOGS_TOPIC_PREFIX", "a b", "pattern"),
                               ("AUTOLOGS_TOPIC_RETENTION_HOURS", "-1", "greater than or equal to 0"),
                               ("AUTOLOGS_CLICKHOUSE_DSN", "notadsn://u:secret@", "give a URL"),
                               ("AUTOLOGS_WEB_PORT", "99999", "less than or equal to 65535"),
                               ("AUTOLOGS_KAFKA_BOOTSTRAP", "nohostport", "host:port"),
                               ("AUTOLOGS_KAFKA_HEAP", "lots", "pattern"),
                               ("AUTOLOGS_CLICKHOUSE_DATABASE", "a;b", "pattern")]:
        monkeypatch.setenv(name, value)
        get_settings.cache_clear()
        with pytest.raises(BadSettings) as refused:
            get_settings()
        assert name in str(refused.value) and words in str(refused.value) and "secret" not in str(refused.value)
        monkeypatch.delenv(name)
    get_settings.cache_clear()


def test_reading_a_data_dir_never_migrated_says_how_to_create_the_tables(tmp_path):
    out = run_cli({**os.environ, "AUTOLOGS_DATA_DIR": str(tmp_path / "fresh"), "AUTOLOGS_WEB_PORT": "1"},
                  "logs", "events", "--account", "a")
    assert out.returncode == 1 and "start the worker (`autologs worker`)" in out.stderr, out.stderr
    assert "autologs migrate" in out.stderr and "Traceback" not in out.stderr


def test_a_replay_into_a_data_dir_never_migrated_says_how_to_create_the_tables(settings, tmp_path):
    from streams.topics import Topics
    from tests.examples import example, keyed

    names = Topics(f"{settings.topic_prefix}-fresh-{uuid.uuid4().hex[:6]}")
    asyncio.run(ensure_topics(settings, names.all()))
    asyncio.run(publish(settings, names.events, [keyed(example("page"))]))
    out = run_cli({**os.environ, "AUTOLOGS_DATA_DIR": str(tmp_path / "fresh"), "AUTOLOGS_WEB_PORT": "1",
                   "AUTOLOGS_TOPIC_PREFIX": names.prefix}, "replay")  # no worker: it runs in the command
    assert out.returncode == 1 and "autologs migrate" in out.stderr and "Traceback" not in out.stderr, out.stderr


def test_a_bad_setting_stops_every_command_with_exit_status_2():
    for command in (("keys", "list", "--account", "a"), ("logs", "events", "--account", "a"), ("broker", "status")):
        out = run_cli({**os.environ, "AUTOLOGS_WEB_PORT": "abc"}, *command)
        assert out.returncode == 2 and "error: bad configuration: AUTOLOGS_WEB_PORT='abc'" in out.stderr, out.stderr
        assert "Traceback" not in out.stderr
    assert run_cli({**os.environ, "AUTOLOGS_WEB_PORT": "abc"}, "keys", "list", "--help").returncode == 0


@pytest.mark.parametrize("query,refused", [
    ("SELECT 1", None), ("  -- note\n/* c */ (SELECT 1)", None), ("with 1 AS a SELECT a", None),
    ("DESCRIBE {db}.event_log", None), ("SELECT 1;", None), ("SELECT ';' AS x", None),
    ("SELECT 'it''s; fine' -- ; no\n", None), ("SELECT `a;b` FROM t", None),
    ("DROP TABLE {db}.api_keys", "only read statements"), ("insert into t values (1)", "only read statements"),
    ("SET readonly = 0", "only read statements"), ("SELECT 1; DROP TABLE {db}.api_keys", "one statement"),
    ("SELECT 1 INTO OUTFILE 'x.csv'", "OUTFILE"), ("SELECT 1 FORMAT Vertical", "leave out FORMAT Vertical"),
    ("select 1 format JSON;\n", "leave out FORMAT JSON"), ("SELECT 'FORMAT CSV' AS f", None),
    ("SELECT formatDateTime(now(), '%F') AS format", None),
    ("SELECT * FROM file('/etc/passwd', 'LineAsString')", "reads files or other systems"),
    ("SELECT * FROM url('http://169.254.169.254/', 'RawBLOB')", "url(…)"), ("SELECT file ('x')", "file(…)"),
    ("SELECT cutURLParameter(url, 'a') FROM {db}.v_event_log", None), ("SELECT 'file(x)' AS f", None),
])
def test_only_single_read_statements_reach_the_engine(query, refused):
    from autologs.clickhouse import refuse_unless_read

    why = refuse_unless_read(query)
    assert (why is None) if refused is None else (refused in why), why


def test_ping_says_no_for_a_closed_port():
    assert broker.ping("127.0.0.1:1", 1.0) is False


async def _topic_overrides(settings, name: str) -> dict[str, str]:
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        [response] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name)])
        [(_error, _msg, _type, _name, entries)] = response.resources
        return {e[0]: e[1] for e in entries if e[3] == 1}  # the topic's own settings
    finally:
        await admin.close()


async def test_a_changed_topic_retention_applies_to_existing_topics(settings, topic_names):
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    name = topic_names.events
    assert await ensure_topics(settings.model_copy(update={"topic_retention_hours": 1}), [name]) == []
    assert (await _topic_overrides(settings, name))["retention.ms"] == "3600000"
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:  # an operator's own setting, made with Kafka's tools
        await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, name,
                                                  {"retention.ms": "3600000", "segment.ms": "7200000"})])
    finally:
        await admin.close()

    longer = settings.model_copy(update={"topic_retention_hours": 48, "topic_partitions": settings.topic_partitions + 2})
    notes = await ensure_topics(longer, [name])
    assert f"{name}: retention.ms=172800000 (was retention.ms=3600000)" in notes, notes
    assert any(f"{name} keeps its {settings.topic_partitions} partitions" in n for n in notes), notes
    assert await _topic_overrides(settings, name) == {"retention.ms": "172800000", "segment.ms": "7200000"}
    assert await ensure_topics(longer.model_copy(update={"topic_partitions": settings.topic_partitions}),
                               [name]) == []  # nothing left to change


async def test_produce_and_consume_a_real_topic(settings, topic_names):
    await ensure_topics(settings, [topic_names.events])
    payloads = [(f"k{i % 3}".encode(), f"v{i}".encode()) for i in range(50)]
    assert await publish(settings, topic_names.events, payloads) == 50
    consumer = AIOKafkaConsumer(topic_names.events, bootstrap_servers=settings.kafka_bootstrap,
                                group_id=f"t-{uuid.uuid4().hex[:6]}", auto_offset_reset="earliest")
    await consumer.start()
    got, partitions = [], set()
    try:
        while len(got) < 50:
            batch = await asyncio.wait_for(consumer.getmany(timeout_ms=1000), 30)
            for tp, records in batch.items():
                got.extend((r.key, r.value) for r in records)
                partitions.update((r.key, tp.partition) for r in records)
    finally:
        await consumer.stop()
    assert sorted(got) == sorted(payloads)
    # Same key, same partition: the per-contact ordering guarantee rests on this.
    assert len({key for key, _ in partitions}) == len(partitions) == 3


def test_event_log_write_and_read(ch):
    ev = EVENT_ADAPTER.validate_python({
        "event_id": f"fnd-{uuid.uuid4().hex}", "account_id": "acct-f", "type": "templates_clicked",
        "occurred_at": "2026-11-20T08:30:00.5+02:00", "email": "Ann@Example.org", "contact_id": 7,
        "ip": "2001:db8::1", "template_id": 12, "template_name": "Receipt", "message_id": "<m1@x>",
        "url": "https://shop.example/p/1", "properties": {"a": 1},
    })
    ch.insert("event_log", [event_log_row(ev, Source("t", 2, 41))], EVENT_LOG_COLUMNS)
    rows = ch.query(
        "SELECT event_type, email, contact_id, ip, template_id, message_id, url, source_name, occurred_at, "
        "src_partition, src_offset FROM {db}.event_log FINAL WHERE event_id = {id:String}",
        {"id": ev["event_id"]}).result_rows
    assert rows == [("templates_clicked", "ann@example.org", 7, "2001:db8::1", 12, "<m1@x>",
                     "https://shop.example/p/1", "Receipt", datetime(2026, 11, 20, 6, 30, 0, 500000), 2, 41)]


def test_inserted_rows_are_freed_at_once(ch):
    """No reference cycle keeps a batch's rows alive until a garbage collection (the worker runs one
    every 10 s)."""
    import gc
    import weakref

    class Rows(list):  # a list that can be weakly referenced
        pass

    def batch(n: int) -> Rows:
        evs = [EVENT_ADAPTER.validate_python({
            "event_id": f"free-{uuid.uuid4().hex}", "account_id": "acct-free", "type": "identify",
            "occurred_at": "2026-11-20T08:30:00Z", "contact_id": i + 1}) for i in range(n)]
        return Rows(event_log_row(ev, Source("t", 0, i)) for i, ev in enumerate(evs))

    was_enabled = gc.isenabled()
    gc.disable()
    try:
        first = batch(3)
        ch.insert("event_log", first, EVENT_LOG_COLUMNS)
        alive = weakref.ref(first)
        del first
        assert alive() is None, "the inserted rows are still referenced after the insert"
        ch.insert("event_log", batch(2), EVENT_LOG_COLUMNS)
    finally:
        if was_enabled:
            gc.enable()
    assert ch.command("SELECT count() FROM {db}.event_log FINAL WHERE account_id = 'acct-free'") == 5


@pytest.mark.parametrize("column_oriented", [False, True])
def test_insert_keeps_every_value_exactly(ch, column_oriented):
    """Inserts go as JSON (orjson) that the engine parses: the values that could bend on the way — the
    64-bit extremes, ms and µs, offsets other than UTC, the epoch, NULL, quotes, backslashes, new lines,
    commas and brackets inside strings, non-ASCII — come back as they went."""
    from datetime import date, timedelta, timezone

    table = f"insert_values_{int(column_oriented)}"
    ch.command(f"DROP TABLE IF EXISTS {{db}}.{table}")
    ch.command(f"CREATE TABLE {{db}}.{table} (n UInt32, s String, lc LowCardinality(String), big UInt64, "
               "at DateTime64(3, 'UTC'), maybe Nullable(DateTime64(3, 'UTC')), day Date) "
               "ENGINE = MergeTree ORDER BY n")
    paris = timezone(timedelta(hours=1))
    rows = [
        [0, 'quote " backslash \\ new\nline tab\t', "lc", 2**64 - 1,
         datetime(2026, 11, 20, 8, 30, 0, 999000, tzinfo=timezone.utc), None, date(2026, 11, 20)],
        [1, "],[ {\"k\": [1, 2]} ,", "", 0, datetime(1970, 1, 1, tzinfo=timezone.utc),
         datetime(2026, 3, 29, 2, 30, 0, 1000, tzinfo=paris), date(1970, 1, 1)],
        [2, "Vélo Rapido ✓ 日本 \U0001f600", "é", 2**53 + 1, datetime(2026, 11, 20, 8, 30, 0, 123456),
         datetime(2299, 12, 31, 23, 59, 59, 999000, tzinfo=timezone.utc), date(2149, 6, 6)],
    ]
    columns = ["n", "s", "lc", "big", "at", "maybe", "day"]
    ch.insert(table, [list(c) for c in zip(*rows)] if column_oriented else rows, columns,
              column_oriented=column_oriented)
    back = ch.rows(f"SELECT n, s, lc, big, at, maybe, day FROM {{db}}.{table} ORDER BY n")
    assert back == [
        (0, rows[0][1], "lc", 2**64 - 1, datetime(2026, 11, 20, 8, 30, 0, 999000), None, date(2026, 11, 20)),
        (1, rows[1][1], "", 0, datetime(1970, 1, 1), datetime(2026, 3, 29, 1, 30, 0, 1000),
         date(1970, 1, 1)),
        (2, rows[2][1], "é", 2**53 + 1, datetime(2026, 11, 20, 8, 30, 0, 123000),
         datetime(2299, 12, 31, 23, 59, 59, 999000), date(2149, 6, 6)),
    ]
    ch.command(f"DROP TABLE {{db}}.{table}")


def test_migrate_plan_cli_lists_nothing_after_migration(ch, tmp_root):
    # The pytest process holds the chdb engine, so the CLI runs on a data dir of its own.
    env = {**os.environ, "AUTOLOGS_DATA_DIR": str(tmp_root / "cli-migrate")}
    first = run_cli(env, "migrate", "--plan")
    assert first.returncode == 0, first.stderr
    assert "pending: 0001_event_log.sql" in first.stdout
    # Every statement in full, as it will run (the database named): the last line of a file's table is there.
    assert "ORDER BY (account_id, email, occurred_at, event_id)" in first.stdout and "{db}" not in first.stdout
    applied = run_cli(env, "migrate")
    assert applied.returncode == 0 and "applying 0001_event_log.sql" in applied.stdout, applied.stderr
    again = run_cli(env, "migrate", "--plan")
    assert again.returncode == 0 and "0 pending migration(s), 0 retention change(s)" in again.stdout, again.stdout
    ttl = run_cli({**env, "AUTOLOGS_EVENT_LOG_TTL_DAYS": "30"}, "migrate", "--plan")  # configuration, not a file
    assert "retention: event_log: rows kept 30 days" in ttl.stdout and "2 retention change(s)" in ttl.stdout, ttl.stdout
    assert "{db}" not in ttl.stdout and "MODIFY TTL" in ttl.stdout, ttl.stdout  # the statement as it will run


def test_gc_policy_turns_the_automatic_collector_off_and_still_frees_cycles():
    code = (
        "import gc, time\n"
        "from autologs import gcpolicy\n"
        "assert gcpolicy.install(0) is False and gc.isenabled()\n"
        "assert gcpolicy.install(0.2) is True and not gc.isenabled()\n"
        "class Node: pass\n"
        "for _ in range(1000):\n"
        "    a, b = Node(), Node(); a.b, b.a = b, a\n"
        "del a, b\n"
        "time.sleep(0.6)\n"
        "assert gcpolicy.stats.collections >= 1 and gcpolicy.stats.collected >= 2000, gcpolicy.stats\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_settings_the_engine_does_not_know_are_not_sent(ch):
    assert ch.supported({"use_skip_indexes_if_final_exact_mode": 0, "no_such_setting_anywhere": 1}) == \
        {"use_skip_indexes_if_final_exact_mode": 0}
    assert ch.supported({"no_such_setting_anywhere": 1}) is None
    assert ch.supported({}) is None


def test_a_worker_started_in_the_foreground_is_used_by_the_demo_tools_and_stopped_by_stop(settings, tmp_root):
    """`autologs worker` in a terminal, then `autologs demo` / `autologs stop` in another: the demo must not
    start a second worker (it could not open the data), and stop must stop it before the broker."""
    from autologs.config import Settings
    from autologs.processes import running_elsewhere, start_worker
    from tests.support import WorkerProcess

    prefix = f"{settings.topic_prefix}-fg-{uuid.uuid4().hex[:6]}"
    worker = WorkerProcess(tmp_root / prefix, prefix, AUTOLOGS_CLICKHOUSE_DATABASE=f"db_{prefix.replace('-', '_')}")
    worker.start()
    try:
        theirs = Settings(data_dir=worker.data_dir, web_port=worker.port, kafka_bootstrap=settings.kafka_bootstrap)
        assert running_elsewhere(theirs)["pid"] == worker.proc.pid
        assert start_worker(theirs) == worker.proc.pid and not (worker.data_dir / "worker.pid").exists()
        other = Settings(data_dir=tmp_root / "someone-else", web_port=worker.port)
        with pytest.raises(RuntimeError, match="served by a worker of another data dir"):
            running_elsewhere(other)
        out = run_cli(worker.env, "stop", "--worker-only")
        assert out.returncode == 0 and "worker stopped" in out.stdout, out.stdout + out.stderr
        assert worker.proc.wait(timeout=60) is not None
    finally:
        worker.stop()


def test_a_retry_loop_cannot_flood_the_log():
    import logging

    from autologs.logthrottle import Throttle

    clock = [0.0]
    f = Throttle(every_s=10.0, monotonic=lambda: clock[0])

    def record(msg: str) -> logging.LogRecord:
        return logging.LogRecord("aiokafka.conn", logging.ERROR, __file__, 1, msg, ("node 1",), None)

    written = [f.filter(record("Unable connect to %s")) for _ in range(6300)]
    assert written.count(True) == 1  # a second of outage: one line
    assert f.filter(record("Unable to update metadata from %s"))  # another message: its own line
    clock[0] = 10.5
    later = record("Unable connect to %s")
    assert f.filter(later) and "and 6299 more like it in 10 s, not logged" in later.getMessage()


def test_the_worker_knows_when_no_bootstrap_server_accepts_connections(kafka_bootstrap):
    from processors.agents import _accepts_connections

    assert _accepts_connections(kafka_bootstrap)
    assert _accepts_connections(f"127.0.0.1:1,{kafka_bootstrap}")  # one of them is enough
    assert not _accepts_connections("127.0.0.1:1", timeout=0.5)


def test_the_demo_runs_end_to_end(settings, tmp_root):
    """`make demo` is the README's first command: its own broker, a worker, a simulated day, dead letters, the
    three views, a removal, the dumps and an API key, on a data dir and ports of its own."""
    from tests.support import free_port

    data = tmp_root / "demo"
    env = {k: v for k, v in os.environ.items() if k != "AUTOLOGS_KAFKA_BOOTSTRAP"}  # it follows the port
    env.update(AUTOLOGS_DATA_DIR=str(data), AUTOLOGS_TOPIC_PREFIX=f"{settings.topic_prefix}-demo",
               AUTOLOGS_WEB_PORT=str(free_port()), AUTOLOGS_KAFKA_PORT=str(free_port()),
               AUTOLOGS_KAFKA_CONTROLLER_PORT=str(free_port()))
    try:
        out = run_cli(env, "demo", "--contacts", "200", timeout=600)  # ~1,600 messages: one is broken on purpose
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        for section in ("5. Dead letters", "6. Scenario log", "7. Contacts in scenarios", "8. Removing contacts",
                        "9. Reads"):
            assert section in out.stdout, section
        assert "Le contact a été supprimé manuellement du scénario" in out.stdout and "removed 3;" in out.stdout
        assert re.search(r"/api/v1/events\?email=\S+%40\S+&from=", out.stdout), out.stdout[-800:]  # a real contact
        letters = re.search(r"the newest \d+ of (\d+) dead letter", out.stdout)
        assert letters and int(letters.group(1)) >= 1 and "Authorization: Bearer al_" in out.stdout
        assert all((data / f"demo-{view}.csv").stat().st_size > 0 for view in ("events", "scenarios", "contacts"))
    finally:
        stopped = run_cli(env, "stop")  # its worker, then its broker
        assert stopped.returncode == 0 and "broker stopped" in stopped.stdout, stopped.stdout + stopped.stderr


def test_a_stalled_broker_does_not_release_what_the_worker_holds(settings, tmp_root):
    """A partition quiet because its fetches stall (the broker paused) is not a quiet stream: the events the
    worker holds wait for the broker, and then for the producers it cut off, instead of being derived before
    what follows them (here an exit, earlier in event time than the held page view, sent after the outage)."""
    import signal
    import time
    from datetime import timedelta, timezone

    from autologs.config import Settings
    from tests.examples import example, keyed
    from tests.support import WorkerProcess, free_port

    s = Settings(data_dir=tmp_root / "stall", kafka_port=free_port(), kafka_controller_port=free_port(),
                 kafka_bootstrap="", topic_prefix=f"{settings.topic_prefix}-stall")
    address = broker.start(s)
    pid = broker._read_pid(broker.paths(s))
    worker = WorkerProcess(tmp_root / "stall-worker", s.topic_prefix, AUTOLOGS_KAFKA_BOOTSTRAP=address,
                           AUTOLOGS_SCENARIO_IDLE_RELEASE_S="3")
    stopped = False
    try:
        worker.start()
        now = datetime.now(timezone.utc)

        def at(seconds_ago: float, kind: str, n: int, **more) -> tuple[bytes, bytes]:
            return keyed(example(kind, n, email="stall@example.com", contact_id=77, **more,
                                 occurred_at=(now - timedelta(seconds=seconds_ago)).isoformat()))

        def send(*messages) -> None:
            asyncio.run(publish(s.model_copy(update={"kafka_bootstrap": address}), f"{s.topic_prefix}.events",
                                list(messages)))

        send(at(60, "automation_started", 1), at(0, "page", 2))
        worker.wait_until(lambda h: h["held"] == 2, timeout=30, what="the events, held")
        time.sleep(1.5)  # the outage begins within the idle time: the broker's last answer is recent
        os.kill(pid, signal.SIGSTOP)  # fetches now stall: no answer, no new events
        stopped = True
        time.sleep(7)
        health = worker.health()  # still held: the partition is not known to be quiet
        assert health["held"] == 2 and health["scenario_rows"] == 0, health
        os.kill(pid, signal.SIGCONT)
        stopped = False
        send(at(1, "automation_exited", 3))  # kept by its producer during the outage, earlier than the page
        worker.wait_until(lambda h: h["held"] == 0 and h["scenario_rows"] >= 2, timeout=60,
                          what="the held events, derived")
        time.sleep(1)
        health = worker.health()
        assert health["scenario_rows"] == 2, health  # started and exited; the page came after the exit: no row
    finally:
        if stopped:
            os.kill(pid, signal.SIGCONT)
        worker.stop()
        broker.stop(s)
