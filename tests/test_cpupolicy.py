"""The embedded engine's threads get the lower priority; Python's threads keep theirs."""
from __future__ import annotations

import subprocess
import sys
import textwrap


def test_the_engines_threads_yield_and_pythons_keep_their_priority(tmp_path):
    # In a process of its own: the policy changes the process it runs in, and chdb allows one engine each.
    script = textwrap.dedent(f"""
        import os, threading, time
        os.environ["AUTOLOGS_DATA_DIR"] = {str(tmp_path)!r}
        from autologs import cpupolicy
        from autologs.clickhouse import ClickHouse
        from autologs.config import get_settings
        ch = ClickHouse(get_settings())
        ch.command("SELECT sum(number) FROM numbers(1000000)")  # the engine starts its threads
        assert cpupolicy.install(7, every_s=0.1)
        time.sleep(0.5)
        def nice(tid):
            return int(open(f"/proc/self/task/{{tid}}/stat").read().rsplit(")", 1)[1].split()[16])
        python = {{t.native_id for t in threading.enumerate()}}
        tids = [int(t) for t in os.listdir("/proc/self/task")]
        engine = [t for t in tids if t not in python]
        assert engine, "the engine started no thread"
        assert all(nice(t) == 7 for t in engine), [(t, nice(t)) for t in engine]
        assert all(nice(t) == 0 for t in python if t in tids), [(t, nice(t)) for t in python if t in tids]
        print("ok", len(engine))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.startswith("ok"), out.stdout + out.stderr
