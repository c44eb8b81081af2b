"""`make demo`: the whole pipeline on this machine, from an empty data dir to printed logs."""
from __future__ import annotations

import asyncio
import time

import click

from autologs import broker
from autologs.config import Settings
from autologs.processes import start_worker, worker_health, worker_query
from streams.simulate import SimulationSpec, run_simulation
from streams.topics import ensure_topics, group_lag, topics


def _table(columns: list[str], rows: list[list], width: int = 28) -> str:
    def cell(v) -> str:
        s = "" if v is None else str(v)
        return s if len(s) <= width else s[: width - 1] + "…"

    widths = [max(len(c), *(len(cell(r[i])) for r in rows)) if rows else len(c) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(cell(v).ljust(w) for v, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)


def section(title: str) -> None:
    click.echo("\n" + click.style(title, bold=True))


def print_query(settings: Settings, query: str) -> None:
    columns, rows = worker_query(settings, query)
    click.echo(_table(columns, rows))


async def wait_written(settings: Settings, timeout: float = 600.0) -> None:
    """Until the worker has committed every message: committed only after written, so all is in ClickHouse."""
    names = topics(settings)
    deadline = time.monotonic() + timeout
    last = None
    while True:
        lag = await group_lag(settings.kafka_bootstrap, names.app_id, [names.events])
        if lag == 0:
            return
        if lag != last:
            click.echo(f"  waiting for the worker: {lag} message(s) left", err=True)
            last = lag
        if time.monotonic() > deadline:
            raise click.ClickException(f"the worker still has {lag} messages to write after {timeout:.0f}s")
        await asyncio.sleep(1.0)


async def read_dead_letters(settings: Settings, limit: int = 10):
    from aiokafka import AIOKafkaConsumer

    from processors.deadletters import parse_dead_letter

    consumer = AIOKafkaConsumer(topics(settings).dead_letters, bootstrap_servers=settings.kafka_bootstrap,
                                group_id=None, auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    letters = []
    try:
        for _ in range(5):
            batch = await consumer.getmany(timeout_ms=500)
            for tp, records in batch.items():
                letters += [parse_dead_letter(r.headers, r.key, r.value, r.partition, r.offset) for r in records]
            if not batch and letters:
                break
    finally:
        await consumer.stop()
    return letters


def run_demo(settings: Settings, contacts: int, seed: int) -> None:
    section("1. Kafka broker (Apache Kafka from Maven Central, KRaft, single node)")
    click.echo(f"  bootstrap: {broker.start(settings)}")
    asyncio.run(ensure_topics(settings))

    section("2. Worker (Faust agents -> ClickHouse; applies migrations at start)")
    pid = start_worker(settings)
    click.echo(f"  worker pid {pid}, web http://127.0.0.1:{settings.web_port}/health, "
               f"log {settings.data_dir / 'worker.log'}")

    section(f"3. Simulating one day of {contacts} contacts (seed {seed}), with a few invalid messages")
    spec = SimulationSpec(seed=seed, contacts=contacts, days=1)
    started = time.monotonic()
    sent = asyncio.run(run_simulation(settings, spec, invalid_every=1000))
    click.echo(f"  {sent} messages published in {time.monotonic() - started:.1f}s")
    asyncio.run(wait_written(settings))
    click.echo(f"  all written in {time.monotonic() - started:.1f}s; worker counters: {worker_health(settings)}")

    section("4. Event log: events by type")
    print_query(settings, "SELECT event_type, count() AS events, countIf(ip = '') AS internal "
                          "FROM {db}.event_log FINAL GROUP BY event_type ORDER BY events DESC")
    section("   a few event-log rows (newest first)")
    print_query(settings, "SELECT occurred_at, account_id, event_type, source_name, email, "
                          "if(ip = '', 'internal request', ip) AS ip FROM {db}.event_log FINAL "
                          "ORDER BY occurred_at DESC, event_id LIMIT 8")

    section("5. Dead letters (original bytes kept; reason and source in headers)")
    letters = asyncio.run(read_dead_letters(settings))
    for dl in letters[:10]:
        original = (dl.original or b"")[:60]
        click.echo(f"  {dl.source_topic}[{dl.source_partition}]@{dl.source_offset}: {dl.reason}  <- {original!r}")
    click.echo(f"  {len(letters)} dead letter(s)")
    click.echo("\nThe broker and the worker keep running; `make stop` stops them.")
