"""`autologs worker`, but with an experimental agents module and (optionally) another consumer group.

python -m bench.experiments.worker   (env: BENCH_AGENTS_MODULE=bench.experiments.agents_fast,
BENCH_APP_ID=<group>; AUTOLOGS_* as for the worker). Without BENCH_AGENTS_MODULE it runs the project's
processors.agents: identical to `autologs worker` except the consumer group.
"""
from __future__ import annotations

import asyncio
import importlib
import os
import sys


def main() -> None:
    app_id = os.environ.get("BENCH_FAUST_APP_ID") or os.environ.get("BENCH_APP_ID")
    if app_id:
        from streams import topics as topics_mod

        topics_mod.Topics.app_id = property(lambda self: app_id)  # type: ignore[assignment]
    from autologs import migrate as m
    from autologs.admin import create_admin_key
    from autologs.clickhouse import ClickHouse
    from autologs.config import get_settings
    from streams.topics import ensure_topics

    settings = get_settings()
    asyncio.run(asyncio.wait_for(ensure_topics(settings), 30))
    m.migrate(ClickHouse(settings))
    create_admin_key(settings)
    asyncio.set_event_loop(asyncio.new_event_loop())
    from faust import Worker

    from bench.common import process_policies
    from streams.faust_patches import install

    install()  # as `autologs worker` does
    name = os.environ.get("BENCH_AGENTS_MODULE", "processors.agents")
    mod = importlib.import_module(name)
    sys.modules["processors.agents"] = mod  # streams.web's /health reads pipeline_stats from here
    import streams.web  # noqa: F401
    from streams.app import app

    process_policies(settings)
    Worker(app, loglevel="warning", quiet=True).execute_from_commandline()


if __name__ == "__main__":
    sys.argv = sys.argv[:1]
    main()
