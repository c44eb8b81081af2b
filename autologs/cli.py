"""The `autologs` command. Every subcommand has --help; errors say what to do next."""
from __future__ import annotations

import asyncio
import sys

import click
import orjson

from autologs.config import get_settings


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """autologs: automation logs (event log, scenario log, contacts in scenarios) from Kafka to ClickHouse."""


# --- broker --------------------------------------------------------------------------------------
@cli.group()
def broker() -> None:
    """Run the project's own single-node Apache Kafka broker (KRaft), fetched from Maven Central."""


@broker.command("start")
@click.option("--wait", default=90.0, show_default=True, help="Seconds to wait for the broker to answer.")
def broker_start(wait: float) -> None:
    """Start the broker (idempotent) and print its bootstrap address."""
    from autologs import broker as b

    try:
        click.echo(b.start(get_settings(), wait_s=wait))
    except b.BrokerError as exc:
        _fail(str(exc))


@broker.command("stop")
def broker_stop() -> None:
    """Stop the broker this project started (pid file) and wait for it to exit."""
    from autologs import broker as b

    click.echo("stopped" if b.stop(get_settings()) else "no broker started by autologs is running")


@broker.command("status")
def broker_status() -> None:
    """Say whether the project's broker runs and whether the bootstrap address answers (exit 1 if not)."""
    from autologs import broker as b

    s = get_settings()
    pid, answers = b.status(s)
    where = b.bootstrap_address(s)
    click.echo(f"broker pid: {pid or 'none'}; {where}: {'answers' if answers else 'does not answer'}")
    sys.exit(0 if answers else 1)


# --- ClickHouse ----------------------------------------------------------------------------------
@cli.command()
@click.option("--plan", is_flag=True, help="Only list the migrations that would be applied.")
def migrate(plan: bool) -> None:
    """Apply the pending numbered DDL files of clickhouse/ddl/ in order."""
    from autologs import migrate as m
    from autologs.clickhouse import ClickHouse, ClickHouseUnavailable

    try:
        ch = ClickHouse(get_settings())
        pending = m.plan(ch)
    except (ClickHouseUnavailable, ValueError) as exc:
        _fail(str(exc))
    if plan:
        for mig in pending:
            click.echo(f"pending: {mig.path.name}")
            for statement in mig.statements():
                click.echo("    " + statement.splitlines()[0][:100] + " ...")
        click.echo(f"{len(pending)} pending migration(s) in database {ch.database}")
        return
    done = m.migrate(ch, progress=lambda mig: click.echo(f"applying {mig.path.name}"))
    click.echo(f"{len(done)} migration(s) applied; database {ch.database} is up to date")


# --- worker --------------------------------------------------------------------------------------
@cli.command()
@click.option("--loglevel", default="info", show_default=True)
def worker(loglevel: str) -> None:
    """Run the stream worker: create topics, apply migrations, then consume until stopped."""
    from autologs import migrate as m
    from autologs.clickhouse import ClickHouse, ClickHouseUnavailable
    from streams.topics import ensure_topics

    settings = get_settings()
    try:
        asyncio.run(asyncio.wait_for(ensure_topics(settings), 30))
    except Exception as exc:
        _fail(f"Kafka at {settings.kafka_bootstrap} did not answer ({exc!r}). Start it with "
              "`autologs broker start` or set AUTOLOGS_KAFKA_BOOTSTRAP.")
    try:
        applied = m.migrate(ClickHouse(settings))
    except ClickHouseUnavailable as exc:
        _fail(str(exc))
    if applied:
        click.echo(f"applied {len(applied)} migration(s)", err=True)
    from autologs.admin import create_admin_key

    create_admin_key(settings)
    asyncio.set_event_loop(asyncio.new_event_loop())
    from faust import Worker

    import processors.agents  # noqa: F401  (registers the agents and the table)
    import streams.web  # noqa: F401  (registers the pages)
    from streams.app import app

    Worker(app, loglevel=loglevel, quiet=True).execute_from_commandline()


# --- producers -----------------------------------------------------------------------------------
@cli.command()
@click.argument("source", type=click.File("rb"), default="-")
@click.option("--all-or-nothing", is_flag=True, help="Send nothing when any line is rejected.")
def produce(source, all_or_nothing: bool) -> None:
    """Publish JSON lines (one event per line) from SOURCE (a file, or - for stdin) to the events topic.

    Every line is checked against the event schemas first; rejected lines are listed with their
    reason and are not sent. Accepted lines are sent and acknowledged by the broker before the
    summary is printed.
    """
    from pydantic import ValidationError

    from processors.validate import explain
    from schemas.events import EVENT_ADAPTER, partition_key
    from streams.produce import publish
    from streams.topics import ensure_topics, topics

    settings = get_settings()
    accepted: list[tuple[bytes, bytes]] = []
    rejected = 0
    for number, line in enumerate(source, 1):
        line = line.strip()
        if not line:
            continue
        try:
            ev = EVENT_ADAPTER.validate_json(line)
        except ValidationError as exc:
            rejected += 1
            click.echo(f"line {number}: rejected: {explain(exc)}", err=True)
            continue
        accepted.append((partition_key(ev.account_id, ev.email, ev.contact_id), line))
    if rejected and all_or_nothing:
        _fail(f"{rejected} line(s) rejected; nothing sent (--all-or-nothing). Fix them and run again.")

    async def go() -> int:
        await ensure_topics(settings)
        return await publish(settings, topics(settings).events, accepted)

    sent = asyncio.run(go()) if accepted else 0
    click.echo(f"{sent} event(s) sent to {topics(settings).events}; {rejected} line(s) rejected")
    sys.exit(1 if rejected else 0)


# --- contacts in scenarios ----------------------------------------------------------------------
@cli.group()
def contacts() -> None:
    """Contacts in scenarios."""


@contacts.command("remove")
@click.option("--account", required=True, help="Account of the scenario.")
@click.option("--scenario", required=True, help="Scenario (automation) id.")
@click.option("--at", "at", help="Time of the removal (ISO 8601; default: now).")
@click.option("--by", default="", help="Who removes them (kept in the log).")
@click.argument("contact", nargs=-1)
def contacts_remove(account: str, scenario: str, at: str | None, by: str, contact: tuple[str, ...]) -> None:
    """Remove up to 50 contacts (emails or contact ids) from a scenario.

    Each removal writes "contact manually removed from the scenario" in the scenario log and takes the
    contact out of contacts in scenarios. More than 50 contacts are refused whole. Contacts that are
    not active or waiting in the scenario are reported one by one (exit status 1).
    """
    from datetime import datetime

    from autologs.removal import RemovalRefused, remove_contacts

    when = None
    if at:
        try:
            when = datetime.fromisoformat(at)
        except ValueError:
            _fail(f"--at {at!r} is not an ISO 8601 time, e.g. 2026-11-26T10:00:00Z")
    try:
        result = asyncio.run(remove_contacts(get_settings(), account, scenario, list(contact), when, by))
    except RemovalRefused as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    for given in result.removed:
        click.echo(f"removed: {given}")
    for given, why in result.not_in_scenario:
        click.echo(f"not removed: {given}: {why}", err=True)
    click.echo(f"{len(result.removed)} contact(s) removed from {scenario} (request {result.request_id}); "
               f"{len(result.not_in_scenario)} not in the scenario")
    sys.exit(1 if result.not_in_scenario else 0)


# --- analysts ------------------------------------------------------------------------------------
@cli.command()
@click.argument("query")
@click.option("--format", "fmt", type=click.Choice(["tsv", "json"]), default="tsv", show_default=True)
def sql(query: str, fmt: str) -> None:
    """Run one read-only QUERY on ClickHouse (`{db}` names the autologs database) and print the rows."""
    from autologs.clickhouse import ClickHouseUnavailable
    from autologs.processes import read_query

    try:
        columns, rows = read_query(get_settings(), query)
    except ClickHouseUnavailable as exc:
        _fail(str(exc))
    except Exception as exc:
        _fail(f"query failed: {exc}")
    if fmt == "json":
        for row in rows:
            click.echo(orjson.dumps(dict(zip(columns, row)), default=str).decode())
        return
    click.echo("\t".join(columns))
    for row in rows:
        click.echo("\t".join("" if v is None else str(v) for v in row))


# --- demo ----------------------------------------------------------------------------------------
@cli.command()
@click.option("--contacts", default=1000, show_default=True, help="Contacts simulated for one day.")
@click.option("--seed", default=42, show_default=True)
def demo(contacts: int, seed: int) -> None:
    """Start the broker and a worker, simulate a day of events, and print what landed."""
    from autologs.demo import run_demo

    try:
        run_demo(get_settings(), contacts, seed)
    except (RuntimeError, OSError) as exc:
        _fail(f"{exc}. `make stop` stops what the demo started.")


@cli.command()
def stop() -> None:
    """Stop the background worker and the broker that this project started."""
    from autologs import broker as b
    from autologs.processes import stop_worker

    s = get_settings()
    click.echo("worker stopped" if stop_worker(s) else "no background worker running")
    click.echo("broker stopped" if b.stop(s) else "no broker started by autologs is running")


from streams.simulate import simulate_command  # noqa: E402

cli.add_command(simulate_command)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
