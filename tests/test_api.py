"""Issue 5 through a real worker: the HTTP API with account keys, CSV dumps, CLI reads and exports."""
from __future__ import annotations

import csv
import io
import ipaddress
import json
import subprocess
import urllib.error
import urllib.request
import uuid
from urllib.parse import urlencode

import orjson
import pytest

from streams.produce import publish
from streams.topics import Topics, ensure_topics
from tests import story
from tests.examples import example, keyed, wait_drained
from tests.support import AUTOLOGS, WorkerProcess, run_cli

RANGE = {"from": "2026-11-19", "to": "2026-11-21", "tz": "UTC"}


def call(worker: WorkerProcess, path: str, key: str | None = None, params: dict | None = None,
         body: dict | None = None) -> tuple[int, bytes, dict]:
    url = f"http://127.0.0.1:{worker.port}/api/v1/{path}" + (f"?{urlencode(params)}" if params else "")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    data = None
    if body is not None:
        data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
    req = urllib.request.Request(url, data=data, headers=headers, method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)



@pytest.fixture(scope="module")
def running(settings, tmp_root):
    """A worker holding the story (account acct-story) and another account's events."""
    import asyncio

    names = Topics(f"{settings.topic_prefix}-api-{uuid.uuid4().hex[:6]}")
    worker = WorkerProcess(tmp_root / names.prefix, names.prefix,
                           AUTOLOGS_CLICKHOUSE_DATABASE=f"db_{names.prefix.replace('-', '_')}")
    worker.start()
    other = [example("page", n, account="acct-other", email="ann@example.com") for n in range(5)]

    async def feed():
        await ensure_topics(settings, names.all())
        from tests.test_scenarios import keyed as story_keyed

        await publish(settings, names.events, [story_keyed(e) for e in story.phase_one()] + [keyed(e) for e in other])
        await wait_drained(settings.kafka_bootstrap, names.app_id, names.events)

    asyncio.run(feed())
    keys = {}
    for account in ("acct-story", "acct-other"):
        out = run_cli(worker.env, "keys", "create", "--account", account, "--label", "tests")
        assert out.returncode == 0, out.stderr
        keys[account] = out.stdout.strip()
    yield worker, keys
    worker.stop()


def test_a_key_reads_only_its_own_account(running):
    worker, keys = running
    status, body, _ = call(worker, "events", keys["acct-story"], RANGE | {"email": "ann@example.com", "limit": "100"})
    assert status == 200, body
    page = orjson.loads(body)
    assert {r["id"] for r in page["rows"]} == {f"story-{n:02d}" for n in range(1, 10)}
    # Same email in the other account: its key sees only its own five events.
    status, body, _ = call(worker, "events", keys["acct-other"], RANGE | {"email": "ann@example.com"})
    assert status == 200 and {r["id"] for r in orjson.loads(body)["rows"]} == {f"ex-page-{n}" for n in range(5)}
    # Asking for another account with one's key is an error, never rows.
    status, body, _ = call(worker, "events", keys["acct-other"], RANGE | {"account": "acct-story"})
    assert status == 403 and b"another account" in body
    status, body, _ = call(worker, "events/story-01", keys["acct-other"])
    assert status == 404
    status, _, _ = call(worker, "events", None, RANGE)
    assert status == 401
    status, _, _ = call(worker, "events", "al_000000000000.notarealsecretnotarealsecret", RANGE)
    assert status == 401


@pytest.mark.parametrize("params,words", [
    ({"from": "yesterday-ish"}, "from"),
    ({"from": "2026-11-21", "to": "2026-11-19"}, "from"),
    ({"limit": "5000"}, "limit"),
    ({"emial": "x@example.com"}, "emial"),
    ({"cursor": "bm90IGEgY3Vyc29y"}, "cursor"),
    ({"tz": "Mars/Olympus"}, "tz"),
])
def test_bad_parameters_get_a_clear_400(running, params, words):
    worker, keys = running
    status, body, _ = call(worker, "events", keys["acct-story"], RANGE | params)
    assert status == 400, body
    assert words in orjson.loads(body)["error"]


def _listening_addresses(port: int) -> set[str]:
    """Local addresses of the TCP sockets listening on `port`, as the kernel lists them."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = open(table).read().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            address, port_hex = fields[1].split(":")
            if fields[3] == "0A" and int(port_hex, 16) == port:  # 0A: LISTEN
                raw = bytes.fromhex(address)  # 32-bit words, each in the host's (little-endian) order
                found.add(str(ipaddress.ip_address(b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4)))))
    return found


def test_the_worker_listens_on_the_configured_address_only(running):
    """AUTOLOGS_WEB_HOST (127.0.0.1 by default) is where the web server binds: Faust's own pages and /health
    must not answer from the machine's other addresses (they did: Faust binds web_bind, not web_host)."""
    worker, _ = running
    assert _listening_addresses(worker.port) == {"127.0.0.1"}


def test_the_cli_finds_a_worker_bound_to_another_address(settings, tmp_root):
    """A worker bound to one address (AUTOLOGS_WEB_HOST) is still the one the CLI asks: the CLI called
    127.0.0.1 only, missed it, and tried to open the engine the worker holds."""
    names = Topics(f"{settings.topic_prefix}-bind-{uuid.uuid4().hex[:6]}")
    worker = WorkerProcess(tmp_root / names.prefix, names.prefix, AUTOLOGS_WEB_HOST="127.0.0.2",
                           AUTOLOGS_CLICKHOUSE_DATABASE=f"db_{names.prefix.replace('-', '_')}").start()
    try:
        assert _listening_addresses(worker.port) == {"127.0.0.2"}
        out = run_cli(worker.env, "sql", "--format", "json", "SELECT 41 + 1 AS n")
        assert out.returncode == 0 and json.loads(out.stdout) == {"n": 42}, out.stderr
    finally:
        worker.stop()


def test_contacts_scenarios_detail_and_removal(running):
    worker, keys = running
    key = keys["acct-story"]
    status, body, _ = call(worker, "contacts", key, RANGE)
    assert status == 200
    rows = orjson.loads(body)["rows"]
    assert [r["email"] for r in rows] == [story.CAT, story.BOB]
    status, body, _ = call(worker, "scenarios", key, RANGE | {"email": story.ANN, "lang": "fr", "limit": "100"})
    assert status == 200
    messages = [r["message"] for r in orjson.loads(body)["rows"]]
    assert "Le contact a quitté le scénario (objectif atteint)" in messages
    status, body, _ = call(worker, "events/story-05", key)
    assert status == 200 and orjson.loads(body)["form_id"] == "f-1"
    status, body, _ = call(worker, "contacts/remove", key, body={"scenario": "sc-cart",
                                                                 "contacts": [f"c{n}@example.com" for n in range(51)]})
    assert status == 400 and b"at most 50" in body
    status, body, headers = call(worker, "contacts/remove", key)
    assert status == 405 and headers.get("Allow") == "POST" and b"POST" in body
    status, body, _ = call(worker, "contacts/remove", key, body={"scenario": "sc-cart", "contacts": [story.CAT],
                                                                 "at": "2099-01-01T00:00:00+00:00"})
    assert status == 400 and b"in the future" in body
    status, body, _ = call(worker, "contacts/remove", key, body={"scenario": "sc-cart", "contacts": [story.CAT],
                                                                 "when": "2026-11-20T10:00:00Z"})
    assert status == 400 and b"unknown field 'when'" in body and b"Nothing was removed" in body
    for wrong, says in (({"contacts": [story.CAT]}, b"'scenario' is missing"),
                        ({"scenario": "sc-cart", "contacts": story.CAT}, b"'contacts' is missing or not a list"),
                        ({"scenario": "sc-cart", "contacts": [{"email": story.CAT}]}, b"'contacts' holds {"),
                        ([story.CAT], b"not a JSON object"),
                        ({"scenario": " ", "contacts": [story.CAT]}, b"'scenario' is empty"),
                        ({"scenario": "sc-cart", "contacts": [story.CAT], "by": ["x"]}, b"'by' is not a string"),
                        ({"scenario": "sc-cart", "contacts": [story.CAT], "at": "noon"},
                         b"not an ISO 8601 time: give e.g. 2026-11-26T10:00:00Z")):
        status, body, _ = call(worker, "contacts/remove", key, body=wrong)
        assert status == 400 and says in body and b"Nothing was removed" in body, body
    request = urllib.request.Request(f"http://127.0.0.1:{worker.port}/api/v1/contacts/remove", method="POST",
                                     data=b'{"scenario": "sc-cart", "contacts": ["x"],}',
                                     headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=60)
    assert refused.value.code == 400 and b"not valid JSON: " in refused.value.read()
    status, body, _ = call(worker, "contacts/remove", key, body={"scenario": "sc-cart",
                                                                 "contacts": [story.CAT, story.DAN]})
    assert status == 200, body
    result = orjson.loads(body)
    assert result["removed"] == [story.CAT]
    assert result["not_in_scenario"] == [{"contact": story.DAN, "reason": "not in this scenario"}]


def test_csv_dump_equals_the_view(running):
    worker, keys = running
    key = keys["acct-story"]
    status, body, _ = call(worker, "events", key, RANGE | {"limit": "1000"})
    page = orjson.loads(body)
    status, dump, headers = call(worker, "events.csv", key, RANGE)
    assert status == 200 and headers["Content-Type"].startswith("text/csv")
    assert headers["Content-Disposition"] == 'attachment; filename="events-2026-11-19_2026-11-21.csv"'  # its range
    for params, name in (({}, "contacts.csv"), ({"from": "2026-11-19"}, "contacts-from-2026-11-19.csv"),
                         ({"to": "2026-11-21"}, "contacts-until-2026-11-21.csv")):  # no range unless asked
        status, _, headers = call(worker, "contacts.csv", key, params)
        assert status == 200 and headers["Content-Disposition"] == f'attachment; filename="{name}"', headers
    table = list(csv.reader(io.StringIO(dump.decode("utf-8"))))
    header, data = table[0], table[1:]
    assert len(data) == len(page["rows"]) == 19
    for line, row in zip(data, page["rows"]):
        row = dict(row, event_id=row["id"])  # the dump adds the event's id after the page's columns
        assert {h: v for h, v in zip(header, line)} == {h: "" if row[h] is None else str(row[h]) for h in header}


def test_cli_reads_and_exports_through_the_worker(running, tmp_path):
    worker, _ = running
    out = run_cli(worker.env, "logs", "scenarios", "--account", "acct-story", "--from", "2026-11-19", "--to", "2026-11-21",
              "-f", "email=ann@example.com")
    assert out.returncode == 0, out.stderr
    assert "Welcome series" in out.stdout and "8 row(s)" in out.stdout
    page = run_cli(worker.env, "logs", "scenarios", "--account", "acct-story", "--from", "2026-11-19", "--to",
                   "2026-11-21", "-f", "email=ann@example.com", "--json")
    rows = orjson.loads(page.stdout)["rows"]
    longest = max((r["message"] for r in rows), key=len)
    assert len(rows) == 8 and len(longest) > 40 and longest not in out.stdout  # cut at 40 by default...
    wide = run_cli(worker.env, "logs", "scenarios", "--account", "acct-story", "--from", "2026-11-19", "--to",
                   "2026-11-21", "-f", "email=ann@example.com", "--wide")
    assert longest in wide.stdout  # ...whole with --wide
    clash = run_cli(worker.env, "logs", "scenarios", "--account", "acct-story", "--from", "2026-11-19",
                    "-f", "from=2026-11-20")  # it used to replace --from silently
    assert clash.returncode == 1 and "from is an option here, not a filter: write --from 2026-11-20" in clash.stderr
    clash = run_cli(worker.env, "export", "events", "--account", "acct-story", "-o", str(tmp_path / "x.csv"),
                    "-f", "excel=1")  # a flag of export: the advice names it as it is written
    assert clash.returncode == 1 and clash.stderr.strip().endswith("write --excel"), clash.stderr
    target = tmp_path / "scenarios.csv"
    out = run_cli(worker.env, "export", "scenarios", "--account", "acct-story", "--from", "2026-11-19", "--to", "2026-11-21",
              "--lang", "fr", "-o", str(target))
    assert out.returncode == 0, out.stderr
    lines = list(csv.reader(target.open(encoding="utf-8")))
    assert len(lines) == 1 + len(story.EXPECTED_SCENARIO_LOG) - 3  # phase one only: no removal, no Bob email
    out = run_cli(worker.env, "logs", "events", "--account", "acct-story", "-f", "bogus=1")
    assert out.returncode == 1 and "bogus" in out.stderr
    out = run_cli(worker.env, "export", "events", "--account", "acct-story", "--from", "2026-11-19", "--to",
                  "2026-11-21", "-o", str(target))
    assert out.returncode == 0, out.stderr
    records = list(csv.reader(target.open(encoding="utf-8", newline="")))
    assert f"{len(records) - 1} row(s)" in out.stdout and len(records) > 2  # counted as records, not lines
    before = target.read_bytes()
    out = run_cli(worker.env, "export", "events", "--account", "acct-story", "--from", "2026-11-21", "--to",
                  "2026-11-19", "-o", str(target))
    assert out.returncode == 1 and target.read_bytes() == before  # a refused export leaves the file as it was
    assert not (tmp_path / "scenarios.csv.part").exists() and "exporting" not in out.stderr  # refused first
    excel = tmp_path / "excel.csv"
    out = run_cli(worker.env, "export", "scenarios", "--account", "acct-story", "--from", "2026-11-19", "--to",
                  "2026-11-21", "--lang", "fr", "--excel", "-o", str(excel))
    assert out.returncode == 0, out.stderr
    raw = excel.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbfdate;user_email;contact_id;scenario_name;"), raw[:80]
    rows = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"), newline=""), delimiter=";"))
    assert len(rows) == len(lines) and rows[1][0].count(":") == 2 and " " in rows[1][0] and "T" not in rows[1][0]
    assert "+" not in rows[1][0] and rows[1][0][:10] == lines[1][0][:10], (rows[1][0], lines[1][0])
    out = run_cli(worker.env, "export", "events", "--account", "acct-story", "-o", str(tmp_path / "no" / "x.csv"))
    assert out.returncode == 1 and "the folder" in out.stderr and "does not exist" in out.stderr, out.stderr
    out = run_cli(worker.env, "keys", "create", "--account", "bad account")
    assert out.returncode == 1 and "account ids are 1-64 letters" in out.stderr, out.stderr  # the worker's reason


def test_a_refused_write_leaves_the_worker_writing(running, settings):
    """chdb has one session per process: a write refused under `readonly` used to leave it read-only, and
    every insert of the worker failed after it. Writes are refused before the engine sees them."""
    import asyncio

    worker, _ = running
    for query in ("DROP TABLE {db}.api_keys", "INSERT INTO {db}.event_log (event_id) VALUES ('x')",
                  "SELECT 1 INTO OUTFILE '/tmp/autologs-outfile.csv'"):
        out = run_cli(worker.env, "sql", query)
        assert out.returncode == 1 and out.stderr.startswith("error: not run: "), out.stderr
        assert "only read statements" in out.stderr or "OUTFILE" in out.stderr, out.stderr
    out = run_cli(worker.env, "sql", "--format", "json", "/* a comment */ (SELECT count() AS n FROM {db}.api_keys)")
    assert out.returncode == 0 and orjson.loads(out.stdout)["n"] >= 2, out.stderr
    # Pasted as the README shows them: beginning with a "-- comment", or from a file on standard input.
    out = run_cli(worker.env, "sql", "--format", "json", "-- keys per account\nSELECT count() AS n FROM {db}.api_keys")
    assert out.returncode == 0 and orjson.loads(out.stdout)["n"] >= 2, out.stderr
    piped = subprocess.run([AUTOLOGS, "sql", "--format", "json"], input="SELECT 41 + 1 AS n\n", env=worker.env,
                           capture_output=True, text=True, timeout=120)
    assert piped.returncode == 0 and orjson.loads(piped.stdout) == {"n": 42}, piped.stderr
    out = run_cli(worker.env, "sql", "SELECT 1 FORMAT Vertical")
    assert out.returncode == 1 and "leave out FORMAT Vertical" in out.stderr, out.stderr
    prefix = worker.env["AUTOLOGS_TOPIC_PREFIX"]
    names = Topics(prefix)
    late = example("page", 9001, account="acct-other", email="late@example.com")

    async def feed():
        await publish(settings, names.events, [keyed(late)])
        await wait_drained(settings.kafka_bootstrap, names.app_id, names.events)

    asyncio.run(feed())
    health = worker.health()
    assert health["status"] == "ok" and health["sink_failures"] == 0, health
    out = run_cli(worker.env, "sql", "--format", "json",
                  f"SELECT count() AS n FROM {{db}}.event_log FINAL WHERE event_id = '{late['event_id']}'")
    assert out.returncode == 0 and orjson.loads(out.stdout)["n"] == 1, out.stderr


def test_a_revoked_key_opens_nothing_at_once(running):
    worker, _ = running
    out = run_cli(worker.env, "keys", "create", "--account", "acct-other", "--label", "leaked")
    assert out.returncode == 0, out.stderr
    key = out.stdout.strip()
    assert call(worker, "events", key, RANGE)[0] == 200  # and now cached by the worker
    listed = run_cli(worker.env, "keys", "list", "--account", "acct-other")
    assert listed.returncode == 0 and f"{key.split('.')[0]}\t" in listed.stdout and "\tleaked" in listed.stdout
    assert key.split(".")[1] not in listed.stdout  # never the secret
    out = run_cli(worker.env, "keys", "revoke", "--account", "acct-other", key.split(".")[0])
    assert out.returncode == 0 and out.stdout.startswith("revoked al_"), out.stderr
    status, body, _ = call(worker, "events", key, RANGE)
    assert status == 401 and b"was revoked" in body, body
    assert b"unknown API key" in call(worker, "events", key.split(".")[0] + ".not-the-secret", RANGE)[1]
    again = run_cli(worker.env, "keys", "revoke", "--account", "acct-other", key.split(".")[0])
    assert again.returncode == 0 and again.stdout.startswith("already revoked al_"), again.stdout
    line = [x for x in run_cli(worker.env, "keys", "list", "--account", "acct-other").stdout.splitlines()
            if x.startswith(key.split(".")[0])]
    assert line and "\trevoked\t" in line[0]
    out = run_cli(worker.env, "keys", "revoke", "--account", "acct-story", key.split(".")[0])  # another account's
    assert out.returncode == 1 and "no key" in out.stderr


def test_openapi_document_lists_every_endpoint(running):
    worker, _ = running
    status, body, _ = call(worker, "openapi.json")
    assert status == 200
    paths = orjson.loads(body)["paths"]
    for view in ("events", "scenarios", "contacts"):
        assert {f"/api/v1/{view}", f"/api/v1/{view}.csv", f"/api/v1/{view}/{{row_id}}"} <= set(paths)
    assert "/api/v1/contacts/remove" in paths
    doc = orjson.loads(body)
    assert {"bearer", "apiKey"} <= set(doc["components"]["securitySchemes"])
    page = {p["name"]: p for p in paths["/api/v1/events"]["get"]["parameters"]}
    assert page["limit"]["schema"]["maximum"] == 1000 and "account" in page and "email" in page
    detail = {p["name"] for p in paths["/api/v1/events/{row_id}"]["get"]["parameters"]}
    assert {"row_id", "tz", "lang", "account"} <= detail
    # Every filter says what it takes (lists, accents), not just its name
    from api.openapi import FILTER_DESCRIPTIONS
    from query import views
    for view in ("events", "scenarios", "contacts"):
        described = {p["name"]: p["description"] for p in paths[f"/api/v1/{view}"]["get"]["parameters"]}
        assert set(views.FILTERS[view]) <= set(FILTER_DESCRIPTIONS), view
        assert all(described[f] == FILTER_DESCRIPTIONS[f] for f in views.FILTERS[view]), view
    assert "commas" in page["event_type"]["description"] and "accents" in page["name"]["description"]


def test_a_line_is_shown_in_the_asked_zone_and_unknown_parameters_are_refused(running):
    worker, keys = running
    key = keys["acct-story"]
    status, body, _ = call(worker, "events/story-05", key, {"tz": "Europe/Paris"})
    assert status == 200 and orjson.loads(body)["occurred_at"].endswith("+01:00"), body
    status, body, _ = call(worker, "events/story-05", key, {"tzz": "Europe/Paris"})
    assert status == 400 and b"tzz" in body


def test_a_worker_of_another_data_dir_on_the_web_port_holds_nothing_of_ours(running, tmp_path):
    """Commands on a data dir no worker holds open it themselves, even when the web port answers for another
    data dir's worker (migrate used to be refused, and sql sent to that worker's engine)."""
    worker, _ = running
    env = dict(worker.env, AUTOLOGS_DATA_DIR=str(tmp_path / "another"))
    out = run_cli(env, "migrate")
    assert out.returncode == 0, out.stdout + out.stderr
    out = run_cli(env, "sql", "--format", "json", "SELECT count() AS n FROM {db}.event_log")
    assert out.returncode == 0 and json.loads(out.stdout) == {"n": 0}, out.stdout + out.stderr  # not the worker's


async def test_a_removal_while_kafka_is_down_says_so_in_json_and_sends_nothing(ch, settings):
    """The API must not answer a bare 500 when the broker is down: a JSON 503 that says nothing was removed and
    what to do. A scenario given by its name is refused with its id (the pages already hint it)."""
    import socket
    from datetime import datetime, timezone

    from aiohttp.test_utils import TestClient, TestServer

    from api.routes import ApiContext, make_app
    from autologs.keys import KeyRing, create_key

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    now = datetime.now(timezone.utc)
    ch.insert("enrollment_state", [["acct-down", "sc-down", "eve@example.com", 0, "eve@example.com", "Welcome down",
                                    "", "s1", "active", now, now, "", None, "e-1", 1]],
              ["account_id", "scenario_id", "contact_key", "contact_id", "email", "scenario_name", "start_id",
               "step_id", "status", "entered_at", "updated_at", "exit_reason", "wait_until", "source_event_id",
               "version"])
    key = create_key(ch, "acct-down", "tests")
    down = settings.model_copy(update={"kafka_bootstrap": f"127.0.0.1:{closed}"})
    async with TestClient(TestServer(make_app(ApiContext(down, ch, KeyRing(ch))))) as client:
        auth = {"Authorization": f"Bearer {key}"}
        response = await client.post("/api/v1/contacts/remove", headers=auth,
                                     json={"scenario": "sc-down", "contacts": ["eve@example.com"]})
        body = await response.json()
        assert response.status == 503, body
        assert "Nothing is removed until it is sent" in body["error"] and "autologs broker start" in body["error"]
        response = await client.post("/api/v1/contacts/remove", headers=auth,
                                     json={"scenario": "Welcome down", "contacts": ["eve@example.com"]})
        body = await response.json()
        assert response.status == 400 and "is the name of scenario sc-down" in body["error"], body
        assert "Nothing was removed" in body["error"]


def test_migrate_plan_reads_through_the_running_worker(running):
    """--plan changes nothing, so it is answered while a worker holds the embedded engine (it was refused)."""
    worker, _ = running
    out = run_cli(worker.env, "migrate", "--plan")
    assert out.returncode == 0 and "0 pending migration(s), 0 retention change(s)" in out.stdout, out.stderr
    out = run_cli(worker.env, "migrate")
    assert out.returncode == 1 and "`autologs migrate --plan` shows what that is" in out.stderr, out.stderr
