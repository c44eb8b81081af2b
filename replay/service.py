"""Entry points of a replay: in the CLI's own process, or as a task inside the worker."""
from __future__ import annotations

import asyncio
from dataclasses import asdict
from datetime import datetime
from typing import Callable, Mapping

from autologs import cpupolicy, gcpolicy
from autologs.clickhouse import ClickHouse
from autologs.config import Settings
from processors.pipeline import Pipeline
from replay.plan import ReplayRefused, plan_replay
from replay.run import Replay, ReplayProgress, ReplayReport
from streams.topics import topics

SOURCES = ("events", "commands")


def source_topics(settings: Settings, chosen: list[str] | None) -> list[str]:
    names = topics(settings)
    chosen = chosen or list(SOURCES)
    unknown = [c for c in chosen if c not in SOURCES]
    if unknown:
        raise ReplayRefused(f"unknown topic {unknown[0]!r}: replay reads {', '.join(SOURCES)}")
    return [getattr(names, c) for c in chosen]


async def replay(settings: Settings, ch: ClickHouse, t_from: datetime | None, t_to: datetime | None,
                 chosen: list[str] | None = None, in_place: bool = False, resume: bool = False,
                 progress: Callable[[ReplayProgress], None] | None = None,
                 live: Pipeline | None = None) -> tuple[Replay, ReplayReport]:
    gcpolicy.install(settings.gc_interval_s)  # a replay holds as many objects as a worker (no-op inside it)
    cpupolicy.install(settings.engine_nice)
    plan = await plan_replay(settings.kafka_bootstrap, source_topics(settings, chosen), t_from, t_to)
    run = Replay(settings, ch, plan, in_place=in_place, progress=progress, live=live)
    return run, await run.run(resume=resume)


def compare_states(rebuilt: Mapping[bytes, bytes], live: Mapping[bytes, bytes]) -> dict:
    """How the rebuilt contact states compare with the live Faust table."""
    keys = set(rebuilt) | set(live.keys())
    different = sorted(k.decode(errors="replace") for k in keys if rebuilt.get(k) != live.get(k))
    return {"contacts": len(keys), "different": len(different), "examples": different[:5]}


class WorkerReplay:
    """One replay at a time inside the worker (with embedded chdb only the worker may write the data)."""

    def __init__(self) -> None:
        self.task: asyncio.Task | None = None
        self.progress: ReplayProgress | None = None
        self.report: dict | None = None
        self.error: str | None = None

    def status(self) -> dict:
        return {"running": bool(self.task and not self.task.done()),
                **(self.progress.to_json() if self.progress else {}), "report": self.report, "error": self.error}

    def start(self, settings: Settings, ch: ClickHouse, live_states: Mapping[bytes, bytes],
              t_from: datetime | None, t_to: datetime | None, chosen: list[str] | None, in_place: bool,
              resume: bool, live: Pipeline | None = None) -> None:
        if self.task and not self.task.done():
            raise ReplayRefused("a replay is already running in this worker; follow it with `autologs replay "
                                "--status`")
        self.progress, self.report, self.error = None, None, None

        def on_progress(p: ReplayProgress) -> None:
            self.progress = p

        async def go() -> None:
            try:
                run, report = await replay(settings, ch, t_from, t_to, chosen, in_place, resume, on_progress, live)
                self.report = asdict(report) | {"events_per_s": round(report.events_per_s)}
                if run.plan.full:
                    self.report["states"] = compare_states(run.states, live_states)
            except ReplayRefused as exc:  # reported through status(); the worker itself goes on
                self.error = str(exc)
            except Exception as exc:
                self.error = f"the replay failed: {type(exc).__name__}: {exc}"

        self.task = asyncio.get_running_loop().create_task(go())
