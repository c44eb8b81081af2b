"""`make demo`: the whole pipeline on this machine, from an empty data dir to printed logs."""
from __future__ import annotations

import asyncio
import time
from urllib.parse import quote

import click
import orjson

from autologs import broker
from autologs.config import Settings
from autologs.processes import running_elsewhere, start_worker, worker_api, worker_health, worker_post, worker_query
from autologs.removal import remove_contacts
from query.csv_export import count_records
from schemas.messages import render
from streams.simulate import SimulationSpec, run_simulation
from replay.deadletters import list_letters
from streams.topics import ensure_topics, group_lag, topics



DAY = ("occurred_at >= fromUnixTimestamp64Milli({day_from:Int64}, 'UTC') "
       "AND occurred_at < fromUnixTimestamp64Milli({day_to:Int64}, 'UTC')")
UTC_TIME = "concat(formatDateTime(occurred_at, '%Y-%m-%dT%H:%i:%S', 'UTC'), 'Z')"

# What the demo prints of each page (a terminal is narrow); `autologs logs` prints every column.
DEMO_COLUMNS = {
    "events": ("date", "type", "name", "email", "ip", "event_name", "scenario_id"),
    "scenarios": ("date", "user_email", "scenario_name", "step_id", "workflow_points", "message"),
    "contacts": ("email", "contact_id", "scenario_name", "step", "status", "entered_at"),
}

def _table(columns: list[str], rows: list[list], width: int = 28) -> str:
    def cell(v) -> str:
        s = "" if v is None else str(v)
        s = s.replace("\r", "␍").replace("\n", "⏎").replace("\t", "→")  # one line per row whatever the cell holds
        return s if len(s) <= width else s[: width - 1] + "…"

    widths = [max(len(c), *(len(cell(r[i])) for r in rows)) if rows else len(c) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(cell(v).ljust(w) for v, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)


def section(title: str) -> None:
    click.echo("\n" + click.style(title, bold=True))


def print_query(settings: Settings, query: str, parameters: dict | None = None) -> None:
    columns, rows = worker_query(settings, query, parameters)
    click.echo(_table(columns, rows))


async def wait_written(settings: Settings, timeout: float = 600.0, topic: str = "events") -> None:
    """Until the worker has committed every message: committed only after written, so all is in ClickHouse."""
    names = topics(settings)
    deadline = time.monotonic() + timeout
    last = None
    while True:
        lag = await group_lag(settings.kafka_bootstrap, names.app_id, [getattr(names, topic)])
        if lag == 0:
            return
        if lag != last:
            click.echo(f"  waiting for the worker: {lag} message(s) left", err=True)
            last = lag
        if time.monotonic() > deadline:
            raise click.ClickException(f"the worker still has {lag} messages to write after {timeout:.0f}s")
        await asyncio.sleep(1.0)


def run_demo(settings: Settings, contacts: int, seed: int) -> None:
    section("1. Kafka broker (Apache Kafka from Maven Central, KRaft, single node)")
    click.echo(f"  bootstrap: {broker.start(settings)}")
    asyncio.run(ensure_topics(settings))

    section("2. Worker (Faust agents -> ClickHouse; applies migrations at start)")
    foreground = running_elsewhere(settings)
    pid = start_worker(settings)
    if foreground:
        click.echo(f"  a worker already runs on this data dir (pid {pid}): the demo uses it; "
                   f"web {settings.web_url}/health")
    else:
        click.echo(f"  worker pid {pid}, web {settings.web_url}/health, "
                   f"log {settings.data_dir / 'worker.log'}")

    section(f"3. Simulating one day of {contacts} contacts (seed {seed}), with a few invalid messages")
    spec = SimulationSpec(seed=seed, contacts=contacts, days=1)
    assert spec.start is not None
    day = {"day_from": int(spec.start.timestamp() * 1000), "day_to": int(spec.end.timestamp() * 1000)}
    click.echo(f"  the simulated day: {spec.start:%Y-%m-%d} (UTC); the views below show that day")
    started = time.monotonic()
    sent = asyncio.run(run_simulation(settings, spec, invalid_every=1000))
    click.echo(f"  {sent} messages published in {time.monotonic() - started:.1f}s")
    asyncio.run(wait_written(settings))
    h = worker_health(settings) or {}
    click.echo(f"  all written in {time.monotonic() - started:.1f}s. The worker, since it started: "
               f"{h.get('messages')} messages read, {h.get('events')} events logged, {h.get('dead_letters')} dead "
               f"letters, {h.get('scenario_rows')} scenario-log rows, {h.get('enrollment_changes')} enrollment "
               f"changes, {h.get('late_events')} late events (no newer than what their contact's state had "
               f"applied: a day published again, or past the allowed lateness; logged, not derived again)")

    section("4. Event log of that day: events by type")
    print_query(settings, "SELECT event_type, count() AS events, countIf(ip = 'internal request') AS internal "
                          f"FROM {{db}}.v_event_log WHERE {DAY} GROUP BY event_type ORDER BY events DESC", day)
    section("   a few event-log rows (newest first)")
    print_query(settings, f"SELECT {UTC_TIME} AS occurred_at_utc, account_id, event_type, name, email, ip "
                          "FROM {db}.v_event_log "
                          f"WHERE {DAY} ORDER BY occurred_at DESC, event_id LIMIT 8", day)

    section("5. Dead letters (original bytes kept; reason and source in headers)")
    letters = asyncio.run(list_letters(settings))  # the same reader as `autologs dlq list`
    for dl in letters[-10:]:
        original = (dl.original or b"")[:60]
        click.echo(f"  {dl.source_topic}[{dl.source_partition}]@{dl.source_offset}: {dl.reason}  <- {original!r}")
    click.echo(f"  the newest {min(len(letters), 10)} of {len(letters)} dead letter(s) in the topic "
               "(`autologs dlq list` shows them all)")

    section("6. Scenario log of that day (messages rendered from the catalogue; English, then French)")
    columns, rows = worker_query(settings, (
        f"SELECT {UTC_TIME} AS occurred_at_utc, email, scenario_name, step_id, start_id, workflow_point, type, "
        f"message_code, message_params FROM {{db}}.scenario_log FINAL WHERE {DAY} "
        "ORDER BY occurred_at DESC, source_event_id, scenario_id LIMIT 8"), day)
    shown = [r[:7] + [render(r[7], r[8], "en")] for r in rows]
    click.echo(_table(columns[:7] + ["message"], shown, width=40))
    click.echo("   " + " | ".join(render(r[7], r[8], "fr") for r in rows[:3]))

    section("7. Contacts in scenarios (active or waiting), per scenario and step")
    print_query(settings, "SELECT account_id, scenario_name, step_id, status, count() AS contacts "
                          "FROM {db}.enrollment_state FINAL WHERE status IN ('active', 'waiting') "
                          "GROUP BY ALL ORDER BY account_id, scenario_name, step_id, status")

    section("8. Removing contacts from a scenario (as an operator would)")
    # Three contacts of one scenario (the first that still has three: earlier runs removed some)
    _, picked = worker_query(settings, (
        "SELECT account_id, scenario_id, arraySlice(arraySort(groupArray(email)), 1, 3) AS emails "
        "FROM {db}.enrollment_state FINAL "
        "WHERE status IN ('active', 'waiting') AND email != '' "
        "AND entered_at >= fromUnixTimestamp64Milli({day_from:Int64}, 'UTC') "
        "AND entered_at < fromUnixTimestamp64Milli({day_to:Int64}, 'UTC') "
        "GROUP BY account_id, scenario_id ORDER BY length(emails) = 3 DESC, account_id, scenario_id LIMIT 1"), day)
    if picked:
        account, scenario, emails = picked[0]
        result = asyncio.run(remove_contacts(settings, account, scenario, emails, by="demo"))
        click.echo(f"  autologs contacts remove --account {account} --scenario {scenario} {' '.join(emails)}")
        click.echo(f"  removed {len(result.removed)}; not in the scenario: {result.not_in_scenario or 'none'}")
        asyncio.run(wait_written(settings, topic="commands"))
        columns, rows = worker_query(settings, (
            f"SELECT {UTC_TIME} AS occurred_at_utc, email, scenario_name, step_id, workflow_point, message_code, "
            "message_params "
            "FROM {db}.scenario_log FINAL WHERE workflow_point = 'manually_removed' AND email IN {e:Array(String)} "
            "ORDER BY email"), {"e": emails})
        click.echo(_table(columns[:5] + ["message (fr)"], [r[:5] + [render(r[5], r[6], "fr")] for r in rows], 50))
    section("9. Reads: a page of each view, and a CSV dump of each (the API the worker serves)")
    account = "acct-1"
    someone = None  # a contact of the page, for the curl example below
    for view in ("events", "scenarios", "contacts"):
        with worker_api(settings, view, {"account": account, "limit": "5", "lang": "fr", "from": "2000-01-01"}) as r:
            page = orjson.loads(r.read())
        someone = someone or next((row["email"] for row in page["rows"] if row.get("email")), None)
        shown = [c for c in page["columns"] if c != "id"]
        columns = [c for c in shown if c in DEMO_COLUMNS[view]]
        click.echo(f"  autologs logs {view} --account {account} --from 2000-01-01 --lang fr --limit 5"
                   f"   ({len(columns)} of its {len(shown)} columns)")
        click.echo(_table(columns, [[row.get(c) for c in columns] for row in page["rows"]], width=32))
        target = settings.data_dir.resolve() / f"demo-{view}.csv"
        with worker_api(settings, f"{view}.csv", {"account": account, "lang": "fr", "from": "2000-01-01"}) as r, \
                open(target, "wb") as out:
            while chunk := r.read(1 << 20):
                out.write(chunk)
        with open(target, "rb") as fh:
            rows = count_records(fh.read()) - 1  # a cell may hold a line break: not a line count
        click.echo(f"  CSV dump: {target} ({rows} rows)\n")
    key = _api_key(settings, account)
    click.echo(f"  API key for {account} (shown once): {key}")
    one = f"email={quote(someone)}&" if someone else ""
    click.echo(f"  curl -H 'Authorization: Bearer {key}' "
               f"'{settings.web_url}/api/v1/events?{one}from=2000-01-01&limit=50'")
    click.echo("\nThe broker and the worker keep running; `autologs stop` (or `make stop`) stops them.")


def _api_key(settings: Settings, account: str) -> str:
    return worker_post(settings, "/admin/keys", {"account": account, "label": "demo"}, timeout=30)["key"]
