"""The benchmark's own arithmetic, pure: CPU readings and the README table (no broker, no engine)."""
from __future__ import annotations

import os
import time

from bench.common import machine_busy_s, process_cpu_s, threads_cpu_s
from bench.report import render_table


def test_cpu_readings_grow_with_work():
    cpu0, busy0 = process_cpu_s(os.getpid()), machine_busy_s()
    until = time.process_time() + 0.3
    while time.process_time() < until:
        pass
    cpu1, busy1 = process_cpu_s(os.getpid()), machine_busy_s()
    assert cpu1 - cpu0 >= 0.2, (cpu0, cpu1)
    assert busy1 - busy0 >= 0.2, (busy0, busy1)
    assert process_cpu_s(2**22 + 12345) is None  # no such process: unreadable, not an error


def test_thread_cpu_readings_tell_the_main_thread_from_other_python_threads():
    import threading

    def burn(seconds: float) -> None:
        until = time.thread_time() + seconds
        while time.thread_time() < until:
            pass

    burnt, leave = threading.Event(), threading.Event()

    def work() -> None:
        burn(0.4)
        burnt.set()
        leave.wait(10)

    before = threads_cpu_s(os.getpid())
    worker = threading.Thread(target=work)
    worker.start()
    burnt.wait(10)
    during = threads_cpu_s(os.getpid())  # the worker is alive: counted under "python"
    leave.set()
    worker.join()
    burn(0.2)
    after = threads_cpu_s(os.getpid())
    assert during["python"] - before["python"] >= 0.3, (before, during)
    assert after["main"] - during["main"] >= 0.15, (during, after)
    assert set(before) == {"main", "python", "native"}
    assert threads_cpu_s(2**22 + 12345) is None


def test_the_runs_table_shows_cpu_per_event_and_cores():
    table = render_table({"events": 1000, "runs": {
        "faust": {"events_per_s": 20_000.0, "seconds": 10.0, "count_final": 1000, "cpu_us_per_event": 48.4,
                  "process_cores": 0.97, "machine_busy_cores": 1.2, "machine_cores": 2,
                  "thread_cores": {"main": 0.7, "python": 0.1, "native": 0.17},
                  "rounds": [{"events_per_s": 20_000.0}, {"events_per_s": 18_500.0}]},
        "raw": {"events_per_s": 25_000.0, "seconds": 8.0, "count_final": 1000}}})
    assert "| faust | 20,000 (rounds: 20,000; 18,500) | 1.00× | 10.0 | 48 | 0.97 / 1.20 of 2 | 0.70 / 0.10 / 0.17 | 1,000 |" in table
    assert "| raw | 25,000 | 1.25× | 8.0 | – | – | – | 1,000 |" in table


def test_profile_summary_gives_each_threads_share_of_the_samples(tmp_path):
    """With `py-spy --gil` a thread's share of the samples is its share of the GIL (bench.run --profile gil)."""
    from bench.profile_summary import summarise

    raw = tmp_path / "gil.txt"
    raw.write_text(
        "thread (1): MainThread;run (asyncio/base_events.py:1);validate_batch (processors/validate.py:64) 6\n"
        "thread (1): MainThread;run (asyncio/base_events.py:1);apply_event (processors/scenarios.py:9) 1\n"
        "thread (7): clickhouse_0;_worker (concurrent/futures/thread.py:1);insert (autologs/clickhouse.py:112) 1\n"
        "thread (8): autologs-validation_0;_worker (concurrent/futures/thread.py:1);"
        "_check_there (processors/validate.py:150) 1\n"
        "thread (9): gc-collector;collect_once (autologs/gcpolicy.py:38) 1\n")
    threads = summarise(str(raw), events=None, seconds=None)["threads"]
    assert {t: d["share_of_samples"] for t, d in threads.items()} == {
        "event loop thread (MainThread)": 0.7, "ClickHouse threads (one lane per table)": 0.1,
        "validation I/O thread (unpickling the validation process's answers)": 0.1, "gc-collector": 0.1}
    main = {r["stage"]: r["samples"] for r in threads["event loop thread (MainThread)"]["stages"]}
    assert main["pydantic validation (validate_json + field validators)"] == 6


def test_profile_summary_names_threads_under_a_process_frame(tmp_path):
    """py-spy `--subprocesses` puts a process frame before the thread's: the thread still names the row."""
    from bench.profile_summary import summarise

    raw = tmp_path / "sub.txt"
    raw.write_text(
        "process 41 \"python -m autologs worker\";thread (1): MainThread;validate_batch (processors/validate.py:64) 3\n"
        "process 41 \"python -m autologs worker\";thread (9): gc-collector;collect_once (autologs/gcpolicy.py:38) 1\n")
    threads = summarise(str(raw), events=None, seconds=None)["threads"]
    assert {t: d["samples"] for t, d in threads.items()} == {"event loop thread (MainThread)": 3, "gc-collector": 1}
