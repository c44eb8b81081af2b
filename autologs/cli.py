"""The `autologs` command. Every subcommand has --help; errors say what to do next."""
from __future__ import annotations

import asyncio
import contextlib
import sys

import click
import orjson

from autologs.config import get_settings


def _fail(message: str) -> None:
    if "(UNKNOWN_DATABASE)" in message or "(UNKNOWN_TABLE)" in message:  # a data dir (or database) never migrated
        message = (f"{message.split(' (version')[0].strip()}\nIf the name is right, the autologs tables are not there "
                   "yet: start the worker (`autologs worker`), which creates them, or run `autologs migrate`; check "
                   "AUTOLOGS_DATA_DIR and AUTOLOGS_CLICKHOUSE_DATABASE if they should exist. `autologs sql \"SHOW "
                   "TABLES FROM {db}\"` lists the tables there are.")
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """autologs: automation logs (event log, scenario log, contacts in scenarios) from Kafka to ClickHouse."""
    from autologs.config import BadSettings

    if not {"-h", "--help"} & set(sys.argv[1:]):
        try:  # every command reads the settings: a bad one is refused here, the same way for all
            get_settings()
        except BadSettings as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
    if click.get_current_context().invoked_subcommand != "worker":
        import logging

        # A short-lived command says what went wrong in one line of its own: the Kafka client's retries and
        # connection errors on the way are noise there (the worker keeps them in its log).
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)


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
@click.option("--plan", is_flag=True, help="Only list what would change: the pending migrations with their statements "
                                           "in full, and the table retention changes.")
def migrate(plan: bool) -> None:
    """Apply the pending numbered DDL files of clickhouse/ddl/ in order."""
    from autologs import migrate as m
    from autologs.clickhouse import ClickHouse, ClickHouseUnavailable

    settings = get_settings()
    through_worker = _worker_holds_data(settings)
    if through_worker and not plan:
        _fail("a worker holds the embedded ClickHouse and applied the migrations and the retention settings "
              "when it started; stop it (`autologs stop --worker-only`) to run migrate (or restart it: it "
              "applies what is pending), and `autologs migrate --plan` shows what that is")
    try:
        ch = _WorkerReads(settings) if through_worker else ClickHouse(settings)
        pending = m.plan(ch)
        # Once the migrations are in, these would follow (a table a pending file creates is not counted).
        retention = m.retention_changes(ch, settings)
    except (ClickHouseUnavailable, ValueError) as exc:
        _fail(str(exc))
    if plan:
        for mig in pending:
            click.echo(f"pending: {mig.path.name}")
            for statement in mig.statements():  # in full: what will run is what is reviewed
                click.echo("\n".join("    " + line for line in ch.sql(statement).splitlines()) + ";")
        for statement, what in retention:
            click.echo(f"retention: {what}\n    {ch.sql(statement)}")
        click.echo(f"{len(pending)} pending migration(s), {len(retention)} retention change(s) in database "
                   f"{ch.database}")
        return
    try:
        done = m.migrate(ch, progress=lambda mig: click.echo(f"applying {mig.path.name}"))
    except m.SchemaProblem as exc:
        _fail(str(exc))
    for change in m.apply_retention(ch, get_settings()):
        click.echo(f"retention: {change}")
    click.echo(f"{len(done)} migration(s) applied; database {ch.database} is up to date")


class _WorkerReads:
    """What `migrate --plan` reads of the database, through the worker that holds the embedded engine."""

    def __init__(self, settings):
        self.settings, self.database = settings, settings.clickhouse_database

    def sql(self, text: str) -> str:
        from autologs.clickhouse import ClickHouse

        return ClickHouse.sql(self, text)  # `{db}` named as the engine's helper names it

    def rows(self, text: str, parameters: dict | None = None) -> list[tuple]:
        from autologs.processes import worker_query

        return [tuple(r) for r in worker_query(self.settings, text, parameters)[1]]


# --- worker --------------------------------------------------------------------------------------
@cli.command()
@click.option("--loglevel", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error", "critical"], case_sensitive=False),
              help="Log level of the worker's output.")
def worker(loglevel: str) -> None:
    """Run the stream worker: create topics, apply migrations, then consume until stopped."""
    from autologs import migrate as m
    from autologs.clickhouse import ClickHouse, ClickHouseUnavailable
    from streams.topics import ensure_topics

    settings = get_settings()
    try:
        notes = asyncio.run(asyncio.wait_for(ensure_topics(settings), 30))
    except Exception as exc:
        _fail(f"Kafka at {settings.kafka_bootstrap} did not answer ({exc!r}). Start it with "
              "`autologs broker start` or set AUTOLOGS_KAFKA_BOOTSTRAP.")
    for note in notes:
        click.echo(f"topics: {note}", err=True)
    try:
        ch = ClickHouse(settings)
        applied = m.migrate(ch)
        for change in m.apply_retention(ch, settings):
            click.echo(f"retention: {change}", err=True)
    except (ClickHouseUnavailable, m.SchemaProblem) as exc:
        _fail(str(exc))
    if applied:
        click.echo(f"applied {len(applied)} migration(s)", err=True)
    from autologs.admin import create_admin_key

    create_admin_key(settings)
    asyncio.set_event_loop(asyncio.new_event_loop())
    from faust import Worker

    from streams.faust_patches import install

    try:
        install()  # batch delivery to the ingest agent (streams/faust_patches.py)
    except RuntimeError as exc:
        _fail(str(exc))

    import processors.agents  # noqa: F401  (registers the agents and the table)
    import streams.web  # noqa: F401  (registers the pages)
    from streams.app import app
    from autologs import cpupolicy, gcpolicy

    gcpolicy.install(settings.gc_interval_s)  # after the imports: they are frozen, never scanned again
    cpupolicy.install(settings.engine_nice)
    from autologs.logthrottle import throttle

    throttle("aiokafka")  # a broker outage must not flood the log (after the imports: the loggers exist)
    Worker(app, loglevel=loglevel, quiet=True).execute_from_commandline()


# --- producers -----------------------------------------------------------------------------------
@cli.command()
@click.argument("source", type=click.File("rb"), default="-")
@click.option("--all-or-nothing", is_flag=True, help="Send nothing when any line is rejected.")
@click.option("--rejects", type=click.File("wb"),
              help="Also write each rejected line to this file, as JSON lines {\"line\", \"reason\", \"value\"}: "
                   "fix the values and produce them again.")
def produce(source, all_or_nothing: bool, rejects) -> None:
    """Publish JSON lines (one event per line) from SOURCE (a file, or - for stdin) to the events topic.

    Every line is checked against the event schemas first; rejected lines are listed with their
    reason and are not sent (--rejects keeps them in a file). Accepted lines are sent and acknowledged
    by the broker before the summary is printed.
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
            reason = explain(exc)
            click.echo(f"line {number}: rejected: {reason}", err=True)
            if rejects is not None:
                rejects.write(orjson.dumps({"line": number, "reason": reason,
                                            "value": line.decode("utf-8", errors="replace")}) + b"\n")
            continue
        accepted.append((partition_key(ev["account_id"], ev["email"], ev["contact_id"]), line))
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
            click.echo(f"error: --at {at!r} is not an ISO 8601 time, e.g. 2026-11-26T10:00:00Z. Nothing was removed.",
                       err=True)
            sys.exit(2)  # as every refusal of the whole request
    try:
        result = asyncio.run(remove_contacts(get_settings(), account, scenario, list(contact), when, by))
    except RemovalRefused as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    settings = get_settings()
    queued = bool(result.removed) and settings.embedded and not _worker_holds_data(settings)
    if queued:
        outcome = {given: "queued" for given in result.removed}
    else:  # what the worker made of them: an exit it still held may have come first
        from autologs.removal import outcomes

        outcome = asyncio.run(outcomes(get_settings(), account, scenario, result.removed)) if result.removed else {}
    not_removed = list(result.not_in_scenario)
    for given in result.removed:
        if outcome[given] == "exited":
            not_removed.append((given, "it had left the scenario (exited) before the removal time; nothing written"))
        else:
            click.echo(f"{outcome[given]}: {given}" if outcome[given] != "pending" else
                       f"sent: {given} (the worker has not applied it yet; `autologs logs contacts` shows when)")
    for given, why in not_removed:
        click.echo(f"not removed: {given}: {why}", err=True)
    done = sum(1 for v in outcome.values() if v in ("removed", "queued", "pending"))
    click.echo(f"{done} contact(s) {'queued for removal from' if queued else 'removed from'} {scenario} "
               f"(request {result.request_id}); {len(not_removed)} not removed")
    if queued:
        click.echo("note: no worker runs with this data dir, so the logs and contacts in scenarios change when one "
                   "starts (`autologs worker`); the removals wait on the commands topic, in order", err=True)
    sys.exit(1 if not_removed else 0)


# --- reads -----------------------------------------------------------------------------------------
VIEW = click.Choice(["events", "scenarios", "contacts"])


def _read_params(account: str, date_from, date_to, tz, lang, filters, options: tuple[str, ...] = (),
                 flags: tuple[str, ...] = ()) -> dict[str, str]:
    """The read's parameters; `options` and `flags`: the command's own options besides the common ones, which
    `-f` must not set (it would silently replace, or be replaced by, the option's value)."""
    params = {"account": account, "tz": tz, "lang": lang}
    if date_from:
        params["from"] = date_from
    if date_to:
        params["to"] = date_to
    for f in filters:
        if "=" not in f:
            _fail(f"--filter {f!r}: write NAME=VALUE, e.g. --filter email=ann@example.com")
        name, value = f.split("=", 1)
        if name in ("account", "from", "to", "tz", "lang", *options):
            _fail(f"--filter {f!r}: {name} is an option here, not a filter: write --{name} {value}")
        if name in flags:
            _fail(f"--filter {f!r}: {name} is an option here, not a filter: write --{name}")
        params[name] = value
    return params


def _read_options(fn):
    for option in reversed([
        click.option("--account", required=True, help="Account whose logs to read."),
        click.option("--from", "date_from", help="Start (ISO 8601 date or time, in --tz). Default: 7 days ago (contacts: any entry date)."),
        click.option("--to", "date_to", help="End (ISO 8601, in --tz). Default: now (contacts: any entry date)."),
        click.option("--tz", default="UTC", show_default=True, help="IANA time zone of the bounds and the dates shown."),
        click.option("--lang", type=click.Choice(["en", "fr"]), default="en", show_default=True,
                     help="Language of the messages and of 'internal request'."),
        click.option("--filter", "-f", "filters", multiple=True,
                     help="NAME=VALUE, repeatable: email, contact_id, scenario, step, event_type, ..."),
    ]):
        fn = option(fn)
    return fn


def _worker_holds_data(settings) -> bool:
    from autologs.processes import worker_holding

    return worker_holding(settings) is not None


@cli.command()
@click.argument("view", type=VIEW)
@_read_options
@click.option("--limit", default=50, show_default=True, help="Rows per page (at most 1000).")
@click.option("--cursor", help="Continue after a previous page (printed at its end).")
@click.option("--wide", is_flag=True, help="Show every cell whole (by default cut at 40 characters).")
@click.option("--json", "as_json", is_flag=True, help="The page as the HTTP API gives it (one JSON document).")
def logs(view, account, date_from, date_to, tz, lang, filters, limit, cursor, wide, as_json) -> None:
    """Print a page of the event log, the scenario log or the contacts in scenarios, newest first."""
    from autologs.demo import _table

    settings = get_settings()
    params = _read_params(account, date_from, date_to, tz, lang, filters, options=("limit", "cursor")) | {
        "limit": str(limit)}
    if cursor:
        params["cursor"] = cursor
    try:
        if _worker_holds_data(settings):
            from autologs.processes import worker_api

            with worker_api(settings, view, params) as r:
                result = orjson.loads(r.read())
        else:
            from autologs.clickhouse import ClickHouse
            from query import views

            params.pop("account")
            result = views.page(ClickHouse(settings), view, account, params)
    except Exception as exc:  # QueryError, an unreachable worker, ...
        _fail(str(exc))
    if as_json:
        click.echo(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
        return
    columns = [c for c in result["columns"] if c != "id"]
    click.echo(_table(columns, [[row.get(c) for c in columns] for row in result["rows"]], width=10**6 if wide else 40))
    span = "".join(f" {side} {result[side]}" for side in ("from", "to") if result.get(side)) or " (any entry date)"
    click.echo(f"{len(result['rows'])} row(s){span} ({result['tz']})")
    if result.get("hint"):
        click.echo(f"hint: {result['hint']}", err=True)
    if result.get("next_cursor"):
        click.echo(f"next page: --cursor {result['next_cursor']}")


@cli.command()
@click.argument("view", type=VIEW)
@_read_options
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True), required=True,
              help="CSV file to write.")
@click.option("--excel", is_flag=True, help="For a spreadsheet opened by a double click: a UTF-8 byte-order mark, "
                                           "';' between cells, dates as 2026-11-20 11:00:00.000 (in --tz).")
def export(view, account, date_from, date_to, tz, lang, filters, output, excel) -> None:
    """Write a CSV dump of a view for a date range (streamed: memory stays flat whatever the range).

    The dump is written next to OUTPUT and renamed to it once complete: a refused or failed export leaves
    an existing OUTPUT as it was, and never a partial file under its name.
    """
    import os
    import time as clock

    from query.views import QueryError, parse

    settings = get_settings()
    params = _read_params(account, date_from, date_to, tz, lang, filters, flags=("excel",))
    if excel:
        params["excel"] = "1"
    try:  # a bad filter or date is said before anything is written
        parse(view, account, {k: v for k, v in params.items() if k not in ("account", "excel")}, paging=False)
    except QueryError as exc:
        _fail(str(exc))
    folder = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(folder):
        _fail(f"cannot write {output}: the folder {folder} does not exist (create it, or give another path)")
    if not os.access(folder, os.W_OK):
        _fail(f"cannot write {output}: the folder {folder} is not writable by this user")
    started, rows = clock.monotonic(), 0
    partial = f"{output}.part"
    try:
        with open(partial, "wb") as out, click.progressbar(length=0, label=f"exporting {view}",
                                                            file=sys.stderr, show_pos=True) as bar:
            if _worker_holds_data(settings):
                from autologs.processes import worker_api
                from query.csv_export import RecordCounter

                records = RecordCounter()
                with worker_api(settings, f"{view}.csv", params, timeout=3600) as r:
                    while chunk := r.read(1 << 20):
                        out.write(chunk)
                        n = records.feed(chunk)
                        rows += n
                        bar.update(n)
                rows = max(rows - 1, 0)  # the header
            else:
                from autologs.clickhouse import ClickHouse
                from query.csv_export import export_csv

                params.pop("account")
                rows = export_csv(ClickHouse(settings), view, account, params, out, progress=bar.update)
        os.replace(partial, output)
    except Exception as exc:
        _fail(str(exc))
    finally:  # refused, failed or interrupted: no partial file is left
        with contextlib.suppress(FileNotFoundError):
            os.remove(partial)
    click.echo(f"wrote {output}: {rows} row(s) in {clock.monotonic() - started:.1f}s")


@cli.group()
def keys() -> None:
    """API keys (each bound to one account)."""


@keys.command("create")
@click.option("--account", required=True, help="The account the key reads and changes (and only it).")
@click.option("--label", default="", help="Who or what uses the key.")
def keys_create(account: str, label: str) -> None:
    """Create an API key for the --account and print it (it is shown once; only a hash is stored)."""
    settings = get_settings()
    try:
        if _worker_holds_data(settings):
            from autologs.processes import worker_post

            key = worker_post(settings, "/admin/keys", {"account": account, "label": label}, timeout=30)["key"]
        else:
            from autologs import migrate as m
            from autologs.clickhouse import ClickHouse
            from autologs.keys import create_key

            ch = ClickHouse(settings)
            m.migrate(ch)
            key = create_key(ch, account, label)
    except Exception as exc:
        _fail(str(exc))
    click.echo(key)


def _keys_call(body: dict) -> dict:
    """The worker's /admin/keys when it holds the data, else the same action here."""
    settings = get_settings()
    if _worker_holds_data(settings):
        from autologs.processes import worker_post

        return worker_post(settings, "/admin/keys", body, timeout=30)
    from autologs import migrate as m
    from autologs.clickhouse import ClickHouse
    from autologs.keys import list_keys, revoke_key

    ch = ClickHouse(settings)
    m.migrate(ch)
    if body["action"] == "list":
        return {"keys": list_keys(ch, body["account"])}
    outcome = revoke_key(ch, body["account"], body["key_id"])
    if outcome is None:
        raise RuntimeError(f"no key {body['key_id']!r} in account {body['account']!r}; "
                           "`autologs keys list --account A` shows them")
    return {"revoked": True, "outcome": outcome}


@keys.command("list")
@click.option("--account", required=True, help="Whose keys to list.")
def keys_list(account: str) -> None:
    """The account's keys: id, creation time, label, revoked or not (never the secrets)."""
    try:
        found = _keys_call({"action": "list", "account": account})["keys"]
    except Exception as exc:
        _fail(str(exc))
    click.echo("key_id\tcreated_at (UTC)\tstate\tlabel")
    for k in found:
        click.echo(f"al_{k['key_id']}\t{k['created_at']}\t{'revoked' if k['revoked'] else 'active'}\t{k['label']}")
    click.echo(f"{len(found)} key(s)", err=True)


@keys.command("revoke")
@click.option("--account", required=True, help="The account the key belongs to.")
@click.argument("key_id")
def keys_revoke(account: str, key_id: str) -> None:
    """Revoke KEY_ID (al_<id> as `keys list` shows it, or the whole key): it opens nothing any more.

    Through the worker it applies at once; an `autologs api` process may honour it for up to 30 s (its cache).
    """
    try:
        outcome = _keys_call({"action": "revoke", "account": account, "key_id": key_id}).get("outcome", "revoked")
    except Exception as exc:
        _fail(str(exc))
    click.echo(f"{outcome} {key_id.split('.', 1)[0]}")


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True)
def api(host: str, port: int) -> None:
    """Serve the HTTP API alone (with a ClickHouse server; with embedded chdb the worker serves it)."""
    settings = get_settings()
    if settings.embedded:
        _fail("with embedded chdb only the worker may open the data, and it serves the API on "
              f"{settings.web_url}/api/v1/. Set AUTOLOGS_CLICKHOUSE_DSN to run it alone.")
    from api.routes import serve

    serve(settings, host, port)


# --- replay ------------------------------------------------------------------------------------------
@cli.command("replay")
@click.option("--from", "date_from", help="Re-read messages from this time (ISO 8601). Default: the beginning.")
@click.option("--to", "date_to", help="...up to this time. Default: the end.")
@click.option("--topics", "chosen", multiple=True, type=click.Choice(["events", "commands"]),
              help="Topics to re-read (default: both).")
@click.option("--in-place", is_flag=True, help="Write into the live tables (relies on the exactly-once effect).")
@click.option("--resume", is_flag=True, help="Continue an interrupted replay from its checkpoint.")
@click.option("--status", is_flag=True,
              help="Follow the replay running in the worker (or show how the last one ended); start nothing.")
def replay_command(date_from, date_to, chosen, in_place, resume, status) -> None:
    """Rebuild the event log, the scenario log and the enrollment state from the topics.

    By default into shadow tables, verified day by day against what was read, then swapped in
    atomically (readers never see a half-built log). With embedded chdb the replay runs inside the
    running worker; without a worker it runs here.
    """
    from datetime import datetime

    from replay.plan import ReplayRefused

    settings = get_settings()
    if status:
        if not _worker_holds_data(settings):
            _fail("no worker runs with this data dir: a replay without a worker runs in the command that started "
                  "it, which shows its progress")
        report = _follow_worker_replay(settings, following_only=True)
        if report is None:
            _fail("no replay has run in this worker since it started")
        click.echo(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
        return
    try:
        t_from = datetime.fromisoformat(date_from) if date_from else None
        t_to = datetime.fromisoformat(date_to) if date_to else None
    except ValueError as exc:
        _fail(f"bad time ({exc}): use ISO 8601, e.g. 2026-11-20T00:00:00Z")
    body = {"from": date_from, "to": date_to, "topics": list(chosen) or None, "in_place": in_place,
            "resume": resume, "topic_prefix": settings.topic_prefix}
    if _worker_holds_data(settings):
        report = _replay_through_worker(settings, body)
    else:
        from autologs.clickhouse import ClickHouse, ClickHouseUnavailable
        from replay.service import replay

        try:
            ch = ClickHouse(settings, threads=2)
        except ClickHouseUnavailable as exc:
            _fail(f"{exc} A replay needs the data: start the worker (`autologs worker`) and run the replay "
                  "again, it will run inside it.")
        bar = _ReplayBar()
        try:
            run, result = asyncio.run(replay(settings, ch, t_from, t_to, list(chosen) or None, in_place, resume,
                                             bar.update))
        except ReplayRefused as exc:
            _fail(str(exc))
        except Exception as exc:  # e.g. a data dir never migrated: _fail says what to do
            _fail(f"the replay failed: {type(exc).__name__}: {exc}")
        finally:
            bar.close()
        from dataclasses import asdict

        report = asdict(result) | {"events_per_s": round(result.events_per_s)}
    click.echo(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())


class _ReplayBar:
    """Progress with events/s and ETA, on stderr."""

    def __init__(self) -> None:
        self.last = 0.0
        self.shown = False

    def update(self, p) -> None:
        import time

        if time.monotonic() - self.last < 0.5 and p.phase == "replaying":
            return
        if not p.total and p.phase == "starting":  # nothing planned yet (or a refusal on its way)
            return
        self.last, self.shown = time.monotonic(), True
        eta = f"{p.eta_s:.0f}s" if p.eta_s is not None else "?"
        pct = 100 * p.read / p.total if p.total else 100
        click.echo(f"\r{p.phase:<12} {p.read}/{p.total} ({pct:5.1f}%)  {p.rate:,.0f} events/s  ETA {eta}   ",
                   err=True, nl=False)

    def close(self) -> None:
        if self.shown:
            click.echo("", err=True)
            self.shown = False


def _replay_through_worker(settings, body: dict) -> dict | None:
    from autologs.processes import worker_post

    try:
        worker_post(settings, "/admin/replay", body, timeout=30)
    except RuntimeError as exc:  # the worker's refusal
        _fail(str(exc))
    except OSError as exc:
        _fail(f"the worker did not take the replay ({exc}); is it running? Start it (`autologs worker`), then try again")
    return _follow_worker_replay(settings)


def _follow_worker_replay(settings, following_only: bool = False) -> dict | None:
    """Progress of the worker's replay until it ends; its report (None when none ran)."""
    import time

    from autologs.processes import worker_get

    bar = _ReplayBar()

    class P:  # the worker's status, shaped like ReplayProgress for the bar
        def __init__(self, s):
            self.phase, self.read, self.total = s.get("phase", "starting"), s.get("read", 0), s.get("total", 0)
            self.rate, self.eta_s = s.get("events_per_s", 0), s.get("eta_s")

    try:
        while True:
            status = worker_get(settings, "/admin/replay", timeout=30)
            bar.update(P(status))
            if not status.get("running"):
                break
            time.sleep(0.5)
    except (OSError, ValueError, RuntimeError) as exc:  # the worker stopped (or was killed) while we followed it
        bar.close()
        _fail(f"lost the worker while following its replay ({type(exc).__name__}: {exc}). The live tables are "
              "swapped after the verification: if the worker stopped before that they are as they were, and "
              "`autologs replay --resume` goes on with the replay. If it stopped after the swap, the restarted "
              "worker finishes the replay by itself (its catch-up and last window): follow it with "
              "`autologs replay --status`.")
    finally:
        bar.close()
    if status.get("error"):
        _fail(f"the last replay in this worker did not complete: {status['error']}" if following_only
              else status["error"])
    return status.get("report")


# --- dead letters -------------------------------------------------------------------------------------
@cli.group()
def dlq() -> None:
    """Dead letters: inspect them, and re-drive them into their source topics."""


def _since(value: str | None):
    from datetime import datetime

    try:
        return datetime.fromisoformat(value) if value else None
    except ValueError:
        _fail(f"--since {value!r} is not an ISO 8601 time")


@dlq.command("list")
@click.option("--since", help="Only letters written since this time (ISO 8601).")
@click.option("--type", "event_type", help="Only letters whose original has this `type` (or not-json, ...).")
def dlq_list(since, event_type) -> None:
    """One line per dead letter: id (partition:offset), time, type, source, reason."""
    from datetime import datetime, timezone

    from replay.deadletters import list_letters, redriven_ids

    settings = get_settings()
    letters = asyncio.run(list_letters(settings, _since(since), event_type))
    done = asyncio.run(redriven_ids(settings))
    for dl in letters:
        when = datetime.fromtimestamp(dl.timestamp_ms / 1000, tz=timezone.utc).isoformat(timespec="seconds")
        notes = [note for flag, note in ((dl.redrive_of, f"the re-drive of {dl.redrive_of}, failed again"),
                                         (dl.id in done, "re-driven")) if flag]
        reason = dl.reason if len(dl.reason) <= 200 else dl.reason[:200].rsplit(" ", 1)[0] + " …"
        click.echo(f"{dl.id}\t{when}\t{dl.event_type}\t{dl.source_topic}[{dl.source_partition}]@"
                   f"{dl.source_offset}\t{reason}" + (f" ({'; '.join(notes)})" if notes else ""))
    click.echo(f"{len(letters)} dead letter(s)", err=True)


@dlq.command("show")
@click.argument("letter_id")
def dlq_show(letter_id) -> None:
    """Everything about one letter (LETTER_ID is partition:offset), with its original bytes."""
    from datetime import datetime, timezone

    from replay.deadletters import list_letters

    found = [dl for dl in asyncio.run(list_letters(get_settings(), unique=False)) if dl.id == letter_id]
    if not found:
        _fail(f"no dead letter {letter_id}; `autologs dlq list` shows their ids")
    dl = found[0]
    for name in ("id", "reason", "source_topic", "source_partition", "source_offset", "failed_at", "redrive_of"):
        click.echo(f"{name}: {getattr(dl, name)}")
    sent = datetime.fromtimestamp(dl.source_timestamp_ms / 1000, tz=timezone.utc).isoformat(timespec="milliseconds")
    click.echo(f"source_timestamp: {sent} ({dl.source_timestamp_ms} ms, the original message's Kafka timestamp)")
    click.echo(f"key: {dl.key!r}")
    click.echo("original:")
    click.echo((dl.original or b"").decode("utf-8", errors="replace"))


@dlq.command("redrive")
@click.option("--since", help="Only letters written since this time.")
@click.option("--type", "event_type", help="Only letters whose original has this `type`.")
@click.option("--id", "ids", multiple=True, help="Only these letters (partition:offset), repeatable.")
@click.option("--fix", type=click.File("rb"),
              help='JSON lines {"id": "p:o", "value": {...corrected event...}}: send these payloads instead.')
@click.option("--include-failed-redrives", is_flag=True, help="Also letters that already failed a re-drive.")
@click.option("--dry-run", is_flag=True, help="Send nothing: list the letters that would be sent, and those that "
                                              "today's schema still refuses, with the reason.")
def dlq_redrive(since, event_type, ids, fix, include_failed_redrives, dry_run) -> None:
    """Send dead letters back to their source topic (after a schema fix, or with corrected payloads).

    Each letter is re-driven once: a re-driven message that is still invalid returns to the
    dead-letter topic once and is not re-driven again unless asked; one that is now valid lands once.
    """
    from replay.deadletters import RedriveRefused, list_letters, redrive

    fixes = {}
    if fix:
        for n, line in enumerate(fix, 1):
            if line.strip():
                try:
                    item = orjson.loads(line)
                    fixes[str(item["id"])] = orjson.dumps(item["value"])
                except (orjson.JSONDecodeError, KeyError, TypeError):
                    _fail(f"--fix line {n}: expected {{\"id\": \"p:o\", \"value\": {{...}}}}")
    settings = get_settings()
    letters = asyncio.run(list_letters(settings, _since(since), event_type))
    wanted = set(ids) | set(fixes)
    if wanted:
        letters = [dl for dl in letters if dl.id in wanted]
    try:
        result = asyncio.run(redrive(settings, letters, fixes, include_failed_redrives, asked=wanted,
                                     dry_run=dry_run))
    except RedriveRefused as exc:
        _fail(str(exc))
    if dry_run:
        for letter_id in result["would_redrive"]:
            reason = result["still_invalid"].get(letter_id)
            click.echo(f"{letter_id}\t" + (f"still invalid: {reason}" if reason else "valid now"))
        click.echo(f"dry run, nothing sent: {len(result['would_redrive'])} would be re-driven "
                   f"({len(result['still_invalid'])} still invalid; they would come back as dead letters once); "
                   f"skipped: {result['already_redriven']} already re-driven, {result['failed_redrive']} that "
                   "failed a re-drive")
        return
    click.echo(f"{result['redriven']} re-driven ({result['fixed']} with a fix); skipped: "
               f"{result['already_redriven']} already re-driven, {result['failed_redrive']} that failed a re-drive")


# --- analysts ------------------------------------------------------------------------------------
@cli.command(context_settings={"ignore_unknown_options": True})  # a query may begin with a "-- comment"
@click.argument("query", required=False)
@click.option("--format", "fmt", type=click.Choice(["tsv", "json"]), default="tsv", show_default=True,
              help="tsv: a header line, then tab-separated rows; json: one JSON object per row.")
def sql(query: str | None, fmt: str) -> None:
    """Run one read-only QUERY on ClickHouse (`{db}` names the autologs database) and print the rows.

    Without QUERY (or with '-') the query is read from standard input: `autologs sql < report.sql`.
    """
    from autologs.clickhouse import ClickHouseUnavailable, QueryRefused
    from autologs.processes import read_query

    if query is None or query == "-":
        if sys.stdin.isatty():
            _fail('give a query, e.g. autologs sql "SELECT count() FROM {db}.v_event_log", or pipe one in')
        query = sys.stdin.read()
    if not query.strip():
        _fail('the query is empty; e.g. autologs sql "SELECT count() FROM {db}.v_event_log"')
    try:
        columns, rows = read_query(get_settings(), query)
    except ClickHouseUnavailable as exc:
        _fail(str(exc))
    except QueryRefused as exc:
        _fail(f"not run: {exc}")
    except Exception as exc:
        _fail(f"query failed: {exc}")
    if fmt == "json":
        for row in rows:
            click.echo(orjson.dumps(dict(zip(columns, row)), default=str).decode())
        return
    if columns:  # (the embedded engine names no columns for an empty result)
        click.echo("\t".join(columns))
    for row in rows:
        click.echo("\t".join("" if v is None else str(v) for v in row))
    click.echo(f"{len(rows)} row(s)", err=True)


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
        _fail(f"{str(exc).rstrip('.')}. `autologs stop` (or `make stop`) stops what the demo started.")


@cli.command()
@click.option("--worker-only", is_flag=True, help="Stop the background worker and leave the broker running.")
def stop(worker_only: bool) -> None:
    """Stop the background worker and the broker that this project started."""
    from autologs import broker as b
    from autologs.processes import stop_worker

    s = get_settings()
    click.echo("worker stopped" if stop_worker(s) else "no background worker running")
    if not worker_only:
        click.echo("broker stopped" if b.stop(s) else "no broker started by autologs is running")


from streams.simulate import simulate_command  # noqa: E402

cli.add_command(simulate_command)


def main() -> None:
    from autologs.config import BadSettings

    from aiokafka.errors import KafkaConnectionError

    try:
        cli()
    except BadSettings as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except KafkaConnectionError as exc:
        click.echo(f"error: cannot reach Kafka at {get_settings().kafka_bootstrap} ({exc}). Start the project's "
                   "broker (`autologs broker start`) or set AUTOLOGS_KAFKA_BOOTSTRAP to yours.", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
