"""Instructions per event of the batch step's Python work, counted by valgrind: a figure that does not drift.

    python -m bench.experiments.instructions [--events 40000] [--tree PATH]

Timings on this shared machine move by 20-40% between runs, which hides a change of a few percent. This
runs `Pipeline.start` over the simulate mix with the inserts stubbed out (no ClickHouse, no Kafka) under
`valgrind --tool=callgrind`, twice: with N events and with N/2. The difference divided by N/2 is the work
per event, startup (imports, schema building) cancelled out. Slow: about a minute per 20k events.
`--tree PATH` counts another checkout (e.g. `git worktree add /tmp/old HEAD~1`) with this venv.
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import inspect
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BATCH = 20_000


def _write_events(n: int, path: Path) -> None:
    """The simulate mix, one JSON message per line, generated once outside the count."""
    import orjson

    from streams.simulate import SimulationSpec, generate

    with open(path, "wb") as f:
        for ev in generate(SimulationSpec(contacts=int(n * 0.14) + 2000, max_events=n)):
            f.write(orjson.dumps(ev) + b"\n")


def _run_batches(n: int, events: Path) -> None:
    """The measured program: the first N events in batches of BATCH through Pipeline.start, inserts stubbed."""
    os.environ.setdefault("AUTOLOGS_DATA_DIR", tempfile.mkdtemp(prefix="autologs-instructions-"))
    from autologs.config import get_settings
    from processors.pipeline import DictStates, Pipeline
    from processors.validate import RawMessage
    from sinks.clickhouse import ClickHouseSink

    values = events.read_bytes().split(b"\n")[:n]
    gc.freeze()  # as the worker (autologs/gcpolicy.py), without its timed collections: counts must repeat
    gc.disable()
    messages = [RawMessage("events", i % 4, i, b"k", v, 0) for i, v in enumerate(values)]

    async def no_insert(self, rows) -> None:
        pass

    async def no_dead_letters(items) -> None:
        raise AssertionError(items[:1])

    ClickHouseSink.write = no_insert  # type: ignore[method-assign]

    # Trees before Pipeline.start(messages, tokens) took (message, token) pairs.
    pairs = "tokens" not in inspect.signature(Pipeline.start).parameters

    async def run() -> None:
        pipeline = Pipeline(get_settings(), None, no_dead_letters, DictStates())  # type: ignore[arg-type]
        for i in range(0, n, BATCH):
            batch = messages[i:i + BATCH]
            await (await pipeline.start([(m, m) for m in batch] if pairs else batch))
        await pipeline.drain()

    asyncio.run(run())


def _count(n: int, tree: Path, events: Path) -> int:
    """Instructions of one run of N events under callgrind."""
    out = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, __file__,
         "--measure", str(n), "--tree", str(tree), "--events-file", str(events)],
        capture_output=True, text=True, cwd=tree)
    found = re.search(r"Collected : (\d+)", out.stderr)
    if out.returncode != 0 or not found:
        raise SystemExit(f"valgrind run failed ({out.returncode}):\n{out.stderr[-2000:]}")
    return int(found.group(1))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=2 * BATCH, help="N, a multiple of 2 x 20,000")
    ap.add_argument("--tree", type=Path, default=ROOT, help="the checkout to count (default: this one)")
    ap.add_argument("--measure", type=int, metavar="N", help=argparse.SUPPRESS)  # the program valgrind runs
    ap.add_argument("--events-file", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.measure:
        sys.path.insert(0, str(args.tree.resolve()))  # the counted tree's modules, not this one's
        _run_batches(args.measure, args.events_file)
        return
    if not shutil.which("valgrind"):
        raise SystemExit("valgrind is not installed: apt-get install valgrind")
    if args.events % (2 * BATCH):
        raise SystemExit(f"--events must be a multiple of {2 * BATCH:,}")
    tree = args.tree.resolve()
    print(f"counting {tree} at {args.events:,} and {args.events // 2:,} events (about a minute per 20k)...",
          file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="autologs-instructions-") as tmp:
        events = Path(tmp) / "events.jsonl"
        _write_events(args.events, events)
        full, half = _count(args.events, tree, events), _count(args.events // 2, tree, events)
    per_event = (full - half) / (args.events // 2)
    print(f"{per_event:,.0f} instructions per event ({full:,} and {half:,} in all)")


if __name__ == "__main__":
    main()
