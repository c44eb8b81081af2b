"""The read layer on real chdb: filters, keyset pages, CSV dumps, isolation, injection, tz and lang.

Everything lives in a scratch database of the run's engine (the `ch` fixture's client), so the shared
test database is untouched. The scenario tables are filled by the real Pipeline from the story.
"""
from __future__ import annotations

import asyncio
import base64
import csv
import io
import json
import random
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import orjson
import pytest

from autologs import migrate
from autologs.clickhouse import ClickHouse
from autologs.config import Settings
from processors.pipeline import DictStates, Pipeline
from processors.scenarios import SCENARIO_LOG_COLUMNS
from processors.validate import RawMessage
from query import csv_export, views
from query.csv_export import csv_chunks, escape_cell, export_csv
from query.views import QueryError
from schemas.events import EVENT_ADAPTER, EVENT_TYPES, IP_UNKNOWN_TYPES
from schemas.messages import CATALOGUE, EXIT_REASONS, LANGUAGES, render, sql_render_expression
from schemas.rows import EVENT_LOG_COLUMNS, Source, event_log_row
from tests import story
from tests.examples import example, keyed

A, B = "acct-qa", "acct-qb"
RANGE = {"from": "2026-11-19", "to": "2026-11-21"}
INJECTIONS = ["' OR 1=1 --", "x' OR '1'='1", "') OR ('1'='1", "{db}", "{account:String}", "\\", "\\'", "\\N",
              "'; DROP TABLE event_log; --", "é\u2028ü\u0000", "%", "_", "*", "a\tb\nc", "1 OR 1=1"]


def _events(account: str) -> list[dict]:
    evs = [example(t, n, account=account) for n, t in enumerate(EVENT_TYPES)]
    return evs + [
        example("form", 30, account=account, form_name='=HYPERLINK("http://evil.example")'),
        example("list_addition", 31, account=account, list_name="@SUM(1+1)"),
        example("page", 32, account=account, page_title="+cmd", url="https://shop.example/plus"),
        example("track", 33, account=account, event_name="-minus"),
        example("form", 34, account=account, form_name='Line 1\nLine 2, "quoted"; tab\tend'),
        example("form", 37, account=account, form_name="\tstarts with a tab"),
        example("page", 35, account=account, occurred_at="2026-11-19T23:30:00+00:00", page_title="Paris day"),
        example("page", 36, account=account, occurred_at="2026-11-20T23:30:00+00:00", page_title="Paris next day"),
    ]


def _rows(events: list[dict]) -> list[list]:
    return [event_log_row(EVENT_ADAPTER.validate_python(e), Source("t", 0, i)) for i, e in enumerate(events)]


async def _derive(db: ClickHouse, events: list[dict]) -> None:
    """The story through the real pipeline (dict states, no dead letters expected)."""
    async def no_dead_letters(items):
        raise AssertionError(f"unexpected dead letters: {items}")

    pipeline = Pipeline(Settings(scenario_idle_release_s=0.001), db, no_dead_letters, states=DictStates())
    await pipeline.handle([RawMessage("events", 0, i, k, v, 0) for i, (k, v) in enumerate(map(keyed, events))])
    await asyncio.sleep(0.01)
    await pipeline.release_idle()
    assert len(pipeline.held) == 0


@pytest.fixture(scope="module")
def db(ch):
    scratch = ClickHouse(ch.settings, database=f"{ch.database}_query")
    scratch.command("DROP DATABASE IF EXISTS {db}")
    migrate.migrate(scratch)
    scratch.insert("event_log", _rows(_events(A)) + _rows(_events(B)), EVENT_LOG_COLUMNS)
    asyncio.run(_derive(scratch, story.phase_one()))
    asyncio.run(_derive(scratch, [dict(e, account_id="acct-story-b") for e in story.phase_one()]))
    yield scratch
    scratch.command("DROP DATABASE IF EXISTS {db}")
    scratch.close()


def all_rows(db, view: str, account: str, params: dict, limit: int = 7) -> list[dict]:
    """Every row through every page (a small page size, so the cursor is exercised)."""
    out, cursor = [], None
    while True:
        p = views.page(db, view, account, {**params, "limit": str(limit), **({"cursor": cursor} if cursor else {})})
        assert len(p["rows"]) <= limit
        out += p["rows"]
        cursor = p["next_cursor"]
        if cursor is None:
            return out


def ids(db, view: str, account: str, params: dict) -> set[str]:
    rows = all_rows(db, view, account, params)
    assert len(rows) == len({r["id"] for r in rows}), "a row came twice"
    return {r["id"] for r in rows}


# ---- rendering --------------------------------------------------------------------------------------------

def test_sql_rendering_equals_python_render_for_every_code(db):
    odd = ["It's \\ \"q\" {step} {name}", " padded\u3000 \n", "", "é\u2028ü", "1"]
    params = [None, {}, {"name": None, "step": None, "url": None}, {"name": 7, "step": True, "url": 1.5}]
    for value in odd:
        params.append({k: value for k in ("name", "step", "url", "action", "wait_for", "wait_until", "reason")})
    params += [{"reason": r} for r in [*EXIT_REASONS, "not_a_reason"]]
    rows = []
    for code in [*CATALOGUE, "unknown_code"]:
        for n, p in enumerate(params):
            rows.append(["acct-render", "sc", "S", datetime(2026, 11, 20, tzinfo=timezone.utc), 0, "", "", "", "", code,
                         code, "" if p is None else orjson.dumps(p).decode(), "automation", f"{code}-{n}", "t", 0, n])
    db.insert("scenario_log", rows, SCENARIO_LOG_COLUMNS)
    exprs = ", ".join(sql_render_expression("message_code", "message_params", lang) for lang in LANGUAGES)
    got = db.rows(f"SELECT message_code, message_params, {exprs} FROM {{db}}.scenario_log FINAL "
                  "WHERE account_id = 'acct-render'")
    assert len(got) == len(rows)
    for code, p, *rendered in got:
        assert rendered == [render(code, p, lang) for lang in LANGUAGES], (code, p)


@pytest.mark.parametrize("tz", ["UTC", "Europe/Paris", "America/St_Johns", "Asia/Kolkata"])
def test_times_inside_messages_are_shown_in_the_readers_zone(db, tz):
    """The page's `tz` applies to a waiting contact's "until" too, the same in SQL and in Python."""
    values = ["2026-11-28T09:00:06+00:00", "2026-11-28T09:00:06.123456+00:00", "2026-03-29T01:30:00+00:00",
              "2026-07-01T23:59:59", "2026-11-28T09:00:06Z", "2026-13-01T00:00:00+00:00", "soon", "", "1", None]
    rows = [["acct-tz", "sc", "S", datetime(2026, 11, 20, tzinfo=timezone.utc), 0, "", "", "", "", "automation_waiting",
             "automation_waiting", orjson.dumps({"wait_for": "2 days", "wait_until": v}).decode(), "automation",
             f"w-{n}", "t", 0, n] for n, v in enumerate(values)]
    db.insert("scenario_log", rows, SCENARIO_LOG_COLUMNS)
    exprs = ", ".join(sql_render_expression("message_code", "message_params", lang, "tz") for lang in LANGUAGES)
    got = db.rows(f"SELECT message_params, {exprs} FROM {{db}}.scenario_log FINAL WHERE account_id = 'acct-tz' "
                  "ORDER BY src_offset", {"tz": tz})
    assert len(got) == len(values)
    for p, *rendered in got:
        assert rendered == [render("automation_waiting", p, lang, tz) for lang in LANGUAGES], (tz, p)
    paris = render("automation_waiting", {"wait_for": "2 days", "wait_until": values[0]}, "fr", "Europe/Paris")
    assert paris == "Le contact est en attente (2 days) jusqu'au 2026-11-28T10:00:06+01:00"


# ---- filters ------------------------------------------------------------------------------------------------

def _event_cases():
    cols = [dict(zip(EVENT_LOG_COLUMNS, r)) for r in _rows(_events(A))]
    in_range = [c for c in cols if c["occurred_at"] < datetime(2026, 11, 22, tzinfo=timezone.utc)]

    def where(pred):
        return {c["event_id"] for c in in_range if pred(c)}

    return [
        ("email", "contact3@example.com", where(lambda c: c["email"] == "contact3@example.com")),
        ("email", "CONTACT3@Example.com", where(lambda c: c["email"] == "contact3@example.com")),
        ("contact_id", "1005", where(lambda c: c["contact_id"] == 1005)),
        ("event_type", "form", where(lambda c: c["event_type"] == "form")),
        ("event_name", "order_created", where(lambda c: c["event_name"] == "order_created")),
        ("name", "newsletter", where(lambda c: "newsletter" in c["source_name"].lower())),
        ("ip", "203.0.113.7", where(lambda c: c["ip"] == "203.0.113.7")),
        ("ip", "::ffff:203.0.113.7", where(lambda c: c["ip"] == "203.0.113.7")),  # the form dual-stack logs show
        ("ip", "internal", where(lambda c: c["ip"] == "" and c["event_type"] not in IP_UNKNOWN_TYPES)),
        ("message_id", "<r1@relay.example>", where(lambda c: c["message_id"] == "<r1@relay.example>")),
        ("template_id", "12", where(lambda c: c["template_id"] == 12)),
        ("campaign_id", "501", where(lambda c: c["campaign_id"] == 501)),
        ("scenario", "sc-1", where(lambda c: c["automation_id"] == "sc-1")),
    ]


def test_every_event_filter_narrows_to_exactly_the_expected_rows(db):
    cases = _event_cases()
    assert {name for name, _, _ in cases} == set(views.FILTERS["events"])
    everything = ids(db, "events", A, RANGE)
    assert len(everything) == len(_events(A))
    for name, value, expected in cases:
        assert expected and expected != everything, name
        assert ids(db, "events", A, RANGE | {name: value}) == expected, (name, value)
    for shown in ("internal request", "Requête interne"):  # the value as the page shows it works too
        assert ids(db, "events", A, RANGE | {"ip": shown}) == ids(db, "events", A, RANGE | {"ip": "internal"})
    both = ids(db, "events", A, RANGE | {"event_type": "page", "ip": "internal"})
    assert both == {i for i in ids(db, "events", A, RANGE | {"ip": "internal"}) if i.startswith("ex-page-")}
    engaged = ids(db, "events", A, RANGE | {"event_type": "templates_opened, templates_clicked"})
    assert engaged and engaged == {i for i in everything if i.startswith(("ex-templates_opened-",
                                                                         "ex-templates_clicked-"))}
    with pytest.raises(QueryError, match="event_type"):
        views.page(db, "events", A, RANGE | {"event_type": "templates_opened,nope"})


PHASE_ONE = [e for e in story.EXPECTED_SCENARIO_LOG if e[9] not in ("removal", "story-20", "story-21")]


def _scenario_ids(pred) -> set[str]:
    return {f"{e[0]}|{e[9]}" for e in PHASE_ONE if pred(e)}


def test_every_scenario_filter_narrows_to_exactly_the_expected_rows(db):
    cases = [
        ("email", story.ANN, _scenario_ids(lambda e: e[2] == story.ANN)),
        ("contact_id", str(story.IDS[story.CAT]), _scenario_ids(lambda e: e[2] == story.CAT)),
        ("scenario", "sc-cart", _scenario_ids(lambda e: e[0] == "sc-cart")),
        ("step", "s2", _scenario_ids(lambda e: e[3] == "s2")),
        ("step", "s2, c2", _scenario_ids(lambda e: e[3] in ("s2", "c2"))),  # several, as the other lists
        ("type", "form", _scenario_ids(lambda e: e[6] == "form")),
        ("workflow_point", "exited", _scenario_ids(lambda e: e[5] == "exited")),
        ("attribution", "message", _scenario_ids(lambda e: e[8] == "message")),
    ]
    assert {name for name, _, _ in cases} == set(views.FILTERS["scenarios"])
    # A scenario's name where its id is expected: the empty page says which id that name has.
    named = views.page(db, "scenarios", story.ACCOUNT, RANGE | {"scenario": "Welcome series"})
    assert named["rows"] == [] and "is the name of sc-welcome: filter with scenario=sc-welcome" in named["hint"]
    assert "hint" not in views.page(db, "scenarios", story.ACCOUNT, RANGE | {"scenario": "sc-nothing"})
    for view in ("events", "scenarios", "contacts"):  # a mistyped account: not just "0 rows"
        assert "account 'acct-stroy' has no events at all" in views.page(db, view, "acct-stroy", RANGE)["hint"]
        assert "hint" not in views.page(db, view, story.ACCOUNT, {"from": "2001-01-01", "to": "2001-01-02"})
    # An account with events but no scenario is a real account: its empty scenario pages carry no hint
    assert "hint" not in views.page(db, "scenarios", A, RANGE | {"email": "nobody@example.com"})
    # With an email, the page reads the copy sorted by contact: it carries the attribution too.
    assert ids(db, "scenarios", story.ACCOUNT, RANGE | {"email": story.ANN, "attribution": "message"}) == \
        _scenario_ids(lambda e: e[2] == story.ANN and e[8] == "message") != set()
    assert ids(db, "scenarios", story.ACCOUNT, RANGE) == _scenario_ids(lambda e: True)
    for name, value, expected in cases:
        assert expected, name
        assert ids(db, "scenarios", story.ACCOUNT, RANGE | {name: value}) == expected, (name, value)


def test_every_contact_filter_narrows_to_exactly_the_expected_rows(db):
    ann, bob, cat = "sc-welcome|" + story.ANN, "sc-welcome|" + story.BOB, "sc-cart|" + story.CAT
    cases = [
        ("status", "all", {ann, bob, cat}), ("status", "exited", {ann}), ("status", "waiting", {bob}),
        ("status", "active, exited", {ann, cat}),
        ("email", story.CAT, {cat}), ("contact_id", str(story.IDS[story.BOB]), {bob}),
        ("scenario", "sc-welcome", {bob}), ("step", "c2", {cat}), ("step", "c2,s2", {bob, cat}),
    ]
    assert {name for name, _, _ in cases} == set(views.FILTERS["contacts"])
    # Default: contacts in scenarios (active or waiting), whenever they entered; Cat's older versions
    # (started, exited) never show: FINAL keeps the latest.
    page = views.page(db, "contacts", story.ACCOUNT, {})
    assert [r["id"] for r in page["rows"]] == [cat, bob] and page["from"] is None and page["to"] is None
    for name, value, expected in cases:
        assert ids(db, "contacts", story.ACCOUNT, {name: value}) == expected, (name, value)
    assert ids(db, "contacts", story.ACCOUNT, {"status": "all", "from": "2026-11-20T10:01:00Z"}) == {cat}
    # Only the bounds given: a `to` alone is not also "the 7 days before it" (these entered a month before).
    until = views.page(db, "contacts", story.ACCOUNT, {"status": "all", "to": "2026-12-20"})
    assert {r["id"] for r in until["rows"]} == {ann, bob, cat} and until["from"] is None and until["to"]
    row = page["rows"][0]
    assert row == {"id": cat, "email": story.CAT, "contact_id": "13", "scenario_name": "Abandoned cart",
                   "scenario_id": "sc-cart", "step": "c2", "status": "active",
                   "entered_at": "2026-11-20T10:02:00.000+00:00"}
    # the id a removal names (`--scenario`); the status in the reader's language
    french = views.page(db, "contacts", story.ACCOUNT, {"lang": "fr"})["rows"][0]
    assert french["status"] == "actif" and french["scenario_id"] == "sc-cart"


# ---- pagination ---------------------------------------------------------------------------------------------

def _at(account: str, n: int, t: datetime, **over) -> dict:
    return example("page", n, account=account, occurred_at=t.isoformat(), event_id=f"p-{n:04d}", **over)


def test_pages_give_each_row_once_while_new_rows_arrive(db):
    now = datetime.now(timezone.utc).replace(microsecond=0)
    # 3 rows per second: ties on the date are broken by event_id.
    first = [_at("acct-pages", n, now - timedelta(minutes=5, seconds=n // 3)) for n in range(250)]
    db.insert("event_log", _rows(first), EVENT_LOG_COLUMNS)
    seen, cursor, extra = [], None, 1000
    for step in range(100):
        params = {"limit": "40", **({"cursor": cursor} if cursor else {})}
        p = views.page(db, "events", "acct-pages", params)  # default range: the last 7 days, pinned by the cursor
        seen += p["rows"]
        # Between requests: newer rows, a re-delivery of rows already seen, and of rows still to come.
        newer = [_at("acct-pages", extra + k, now - timedelta(minutes=1) + timedelta(milliseconds=step))
                 for k in range(5)]
        extra += 5
        db.insert("event_log", _rows(newer + first[:3] + first[200:203]), EVENT_LOG_COLUMNS)
        cursor = p["next_cursor"]
        if cursor is None:
            break
    assert [r["id"] for r in seen] == [e["event_id"] for e in
                                       sorted(first, key=lambda e: (e["occurred_at"], e["event_id"]), reverse=True)]
    dates = [(r["date"], r["id"]) for r in seen]
    assert dates == sorted(dates, reverse=True) and len(set(dates)) == len(dates)
    # A fresh first page sees the new rows.
    assert views.page(db, "events", "acct-pages", {"limit": "1"})["rows"][0]["id"] == f"p-{extra - 1:04d}"


def test_scenario_and_contact_pages_match_one_big_page(db):
    for view, params in (("scenarios", RANGE), ("contacts", {"status": "all"})):
        whole = views.page(db, view, story.ACCOUNT, params | {"limit": "1000"})
        assert whole["next_cursor"] is None
        assert all_rows(db, view, story.ACCOUNT, params, limit=2) == whole["rows"]



ENTRIES = "acct-entries"


def _lifecycles(contacts: int, seed: int = 11) -> list[dict]:
    """Random enrollments of one account: starts, steps, waits, exits, removals and restarts, in event-time
    order; entries share seconds, so the page's ties are broken by scenario and contact."""
    rng = random.Random(seed)
    kinds = ["automation_step_reached", "automation_waiting", "automation_action", "automation_exited",
             "automation_removed", "automation_restarted"]
    evs = []
    for c in range(contacts):
        for sc in rng.sample(range(6), rng.randint(1, 3)):
            t = rng.randrange(0, 3_000)
            seq = ["automation_started"] + rng.choices(kinds, weights=[5, 3, 2, 2, 1, 2], k=rng.randint(0, 5))
            for k, kind in enumerate(seq):
                t += rng.randint(0, 400)
                extra = {"automation_exited": {"reason": "goal_reached"},
                         "automation_action": {"action": "send_email"}}.get(kind, {})
                evs.append({"event_id": f"en-{c}-{sc}-{k}", "account_id": ENTRIES, "type": kind,
                            "email": f"e{c}@example.com", "contact_id": 50_000 + c,
                            "occurred_at": (story.T0 + timedelta(seconds=t)).isoformat(),
                            "automation_id": f"sc-{sc}", "automation_name": f"Scenario {sc}",
                            "step_id": f"s{rng.randint(1, 4)}", **extra})
    return sorted(evs, key=lambda e: (e["occurred_at"], e["event_id"]))


@pytest.fixture(scope="module")
def entries(db):
    """~5,000 enrollments derived by the real Pipeline in 8 batches: every batch is another insert, so the
    copy sorted by entry holds several versions of a key in several parts, as the worker leaves it."""
    async def no_dead_letters(items):
        raise AssertionError(f"unexpected dead letters: {items}")

    async def derive(evs: list[dict]) -> None:
        pipeline = Pipeline(Settings(scenario_idle_release_s=0.001), db, no_dead_letters, states=DictStates())
        for k in range(8):
            batch = evs[k * len(evs) // 8:(k + 1) * len(evs) // 8]
            await pipeline.handle([RawMessage("events", 0, k * len(evs) + i, *keyed(e), 0)
                                   for i, e in enumerate(batch)])
            await asyncio.sleep(0.002)
            await pipeline.release_idle()
        assert len(pipeline.held) == 0

    db.command("SYSTEM STOP MERGES {db}.enrollment_state_by_entry")  # keep the 8 parts (this scratch db only)
    asyncio.run(derive(_lifecycles(2_500)))
    return db


@pytest.mark.parametrize("params", [{}, {"status": "all"}, {"status": "exited,removed"}, {"step": "s2"},
                                    {"status": "all", "from": "2026-11-20T10:20:00Z"},
                                    {"status": "waiting", "tz": "Europe/Paris", "from": "2026-11-20T10:30:00Z"}])
def test_contact_pages_without_a_contact_read_the_copy_by_entry_and_equal_enrollment_states(entries, monkeypatch,
                                                                                          params):
    """enrollment_state is sorted by scenario; a contacts page without an email or a scenario reads
    enrollment_state_by_entry newest first without FINAL, the latest version of each key by LIMIT 1 BY:
    the same rows, in the same order, across every page, as enrollment_state read with FINAL."""
    db = entries
    versions = db.rows("SELECT count(), uniqExact(scenario_id, contact_key), uniqExact(_part) "
                       "FROM {db}.enrollment_state_by_entry WHERE account_id = {a:String}", {"a": ENTRIES})[0]
    assert versions[0] > versions[1] > 4_000 and versions[2] >= 8  # stale versions, in 8 parts
    sql_seen: list[str] = []
    query = db.query
    monkeypatch.setattr(db, "query", lambda sql, *a, **k: (sql_seen.append(sql), query(sql, *a, **k))[1])
    from_copy = all_rows(db, "contacts", ENTRIES, params, limit=97)
    assert from_copy and sql_seen and all("enrollment_state_by_entry WHERE" in s and "FINAL" not in s
                                          for s in sql_seen)
    monkeypatch.setitem(views.SPECS, "contacts", replace(views.SPECS["contacts"], by_entry=""))
    sql_seen.clear()
    assert all_rows(db, "contacts", ENTRIES, params, limit=97) == from_copy
    assert sql_seen and all("enrollment_state FINAL" in s for s in sql_seen)


def test_a_contacts_page_that_the_copy_gives_out_of_order_is_read_again_from_enrollment_state(entries, monkeypatch,
                                                                                            caplog):
    """The copy's page has no outer ORDER BY (views.Query._latest_by_entry_sql): an engine that did not keep
    the inner order must not show a wrong page. Simulated by reading the copy oldest first."""
    good = all_rows(entries, "contacts", ENTRIES, {"status": "all"}, limit=97)
    latest = views.Query._latest_by_entry_sql
    monkeypatch.setattr(views.Query, "_latest_by_entry_sql", lambda self, *a: latest(self, *a).replace(" DESC", " ASC"))
    with caplog.at_level("WARNING", logger="autologs.query"):
        assert all_rows(entries, "contacts", ENTRIES, {"status": "all"}, limit=97) == good
    assert "came out of order" in caplog.text


def test_a_contact_page_by_email_narrows_the_key_to_the_contact_and_gives_the_same_rows(entries, monkeypatch):
    """email = X holds exactly where contact_key = X (views.View.email_key): the page filters the key too."""
    sql_seen: list[str] = []
    query = entries.query
    monkeypatch.setattr(entries, "query", lambda sql, *a, **k: (sql_seen.append(sql), query(sql, *a, **k))[1])
    emails = [f"E{c}@example.com" for c in range(0, 2_500, 97)]
    pages = {e: all_rows(entries, "contacts", ENTRIES, {"email": e, "status": "all"}, limit=2) for e in emails}
    assert sum(map(len, pages.values())) > 40
    assert sql_seen and all("PREWHERE" in s and "contact_key = {f_email:String}" in s.split("WHERE")[1]
                            for s in sql_seen)
    monkeypatch.setitem(views.SPECS, "contacts", replace(views.SPECS["contacts"], email_key=""))
    sql_seen.clear()
    assert {e: all_rows(entries, "contacts", ENTRIES, {"email": e, "status": "all"}, limit=2) for e in emails} == pages
    assert sql_seen and not any("contact_key = {f_email" in s for s in sql_seen)


def test_contact_pages_of_one_contact_or_scenario_or_up_to_a_date_and_dumps_read_enrollment_state(entries,
                                                                                                monkeypatch):
    """Those would read the copy by entry far down from the newest entry (see views.parse)."""
    sql_seen: list[str] = []
    query = entries.query
    monkeypatch.setattr(entries, "query", lambda sql, *a, **k: (sql_seen.append(sql), query(sql, *a, **k))[1])
    for params in ({"email": "E7@example.com", "status": "all"}, {"scenario": "sc-2"},
                   {"contact_id": "50007", "status": "all"},
                   {"status": "all", "from": "2026-11-20T10:20:00Z", "to": "2026-11-20T10:40:00Z"}):
        assert all_rows(entries, "contacts", ENTRIES, params), params
    assert sql_seen and not any("enrollment_state_by_entry" in s for s in sql_seen)
    assert b"".join(csv_chunks(entries, "contacts", ENTRIES, {}))
    assert not any("enrollment_state_by_entry" in s for s in sql_seen)


# ---- CSV -----------------------------------------------------------------------------------------------------

def _read_csv(data: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))


@pytest.mark.parametrize("view,account,params", [
    ("events", A, RANGE | {"lang": "fr", "tz": "America/St_Johns"}),
    ("scenarios", story.ACCOUNT, RANGE | {"lang": "fr", "tz": "Europe/Paris"}),
    ("contacts", story.ACCOUNT, {"status": "all"}),
])
@pytest.mark.parametrize("chunk_rows", [50_000, 3])
def test_a_csv_dump_equals_the_view(db, monkeypatch, view, account, params, chunk_rows):
    monkeypatch.setattr(csv_export, "CHUNK_ROWS", chunk_rows)
    monkeypatch.setattr(csv_export, "CHUNKS_PER_SCAN", 2)
    monkeypatch.setattr(csv_export, "EXPORT_CHUNK_ROWS", chunk_rows)
    page = views.page(db, view, account, params | {"limit": "1000"})
    out = io.BytesIO()
    progress = []
    written = export_csv(db, view, account, params, out, progress.append)
    table = _read_csv(out.getvalue())
    header, data = table[0], table[1:]
    extra = [name for name, _ in views.SPECS[view].dump_columns]  # what a dump adds after the page's columns
    shown = [c for c in page["columns"] if c != "id"]
    assert header == shown + extra
    assert [line[:len(shown)] for line in data] == [[escape_cell(row[c]) for c in shown] for row in page["rows"]]
    tz = params.get("tz", "UTC")
    for line, row in zip(data, page["rows"]):
        added = dict(zip(extra, line[len(shown):]))
        if view == "events":
            assert added == {"event_id": row["id"]}
        elif view == "contacts":
            full = views.detail(db, view, account, row["id"], tz=tz)
            assert added == {"waiting_until": full["wait_until"] or "", "last_change": full["updated_at"]}, added
    assert written == sum(progress) == len(page["rows"]) > 0
    assert out.getvalue() == b"".join(csv_chunks(db, view, account, params))
    assert out.getvalue().count(b"\r\n") >= len(data) + 1  # RFC 4180 line ends
    # For a spreadsheet: the same cells, ';'-separated after a byte-order mark, dates without T and offset.
    excel = io.BytesIO()
    assert export_csv(db, view, account, params | {"excel": "1"}, excel) == len(data)
    assert excel.getvalue().startswith(csv_export.EXCEL_BOM)
    sheet = list(csv.reader(io.StringIO(excel.getvalue().decode("utf-8-sig"), newline=""), delimiter=";"))
    dated = [i for i, c in enumerate(header) if c in csv_export.DATE_COLUMNS]
    assert sheet[0] == header and len(sheet) == len(table) and dated
    for got, want in zip(sheet[1:], data):
        assert [got[i] for i in range(len(header)) if i not in dated] == \
            [want[i] for i in range(len(header)) if i not in dated]
        assert all(got[i] == want[i][:23].replace("T", " ") for i in dated), (got, want)


@pytest.mark.parametrize("params", [RANGE | {"lang": "fr", "tz": "America/St_Johns"},
                                    RANGE | {"ip": "internal", "tz": "Asia/Kolkata"},
                                    RANGE | {"event_type": "form", "name": "line"}])
def test_the_events_dump_reads_the_time_ordered_copy_and_equals_the_pages(db, monkeypatch, params):
    """`events` dumps read event_log_by_time (filled by its materialized view): the same rows as the pages
    (which read event_log), in the same order, and the same bytes as a dump of event_log itself."""
    assert csv_export.DUMP_TABLES["events"] == "event_log_by_time"
    copy = db.rows("SELECT count() FROM {db}.event_log_by_time FINAL")[0][0]
    assert copy == db.rows("SELECT count() FROM {db}.event_log FINAL")[0][0] > 0
    monkeypatch.setattr(csv_export, "CHUNK_ROWS", 2)
    rows = all_rows(db, "events", A, params, limit=3)
    assert rows
    dump = b"".join(csv_chunks(db, "events", A, params))
    header, *data = _read_csv(dump)
    assert header[-1] == "event_id"  # added to the page's columns: what an analyst joins on
    assert data == [[escape_cell(row["id"] if c == "event_id" else row[c]) for c in header] for row in rows]
    # export_csv streams chunks of EXPORT_CHUNK_ROWS in pieces of STREAM_READ bytes, counting rows on the fly
    monkeypatch.setattr(csv_export, "EXPORT_CHUNK_ROWS", 2)
    monkeypatch.setattr(csv_export, "STREAM_READ", 5)
    out, progress = io.BytesIO(), []
    assert export_csv(db, "events", A, params, out, progress.append) == sum(progress) == len(rows)
    assert out.getvalue() == dump
    monkeypatch.setattr(csv_export, "DUMP_TABLES", {})  # the same dump from event_log
    assert b"".join(csv_chunks(db, "events", A, params)) == dump


@pytest.mark.parametrize("params", [RANGE, RANGE | {"event_type": "form", "lang": "fr"}, RANGE | {"ip": "internal"}])
def test_event_pages_without_an_email_read_the_time_ordered_copy_and_equal_event_logs(db, monkeypatch, params):
    """event_log is sorted by contact first; a page without an email reads event_log_by_time (the account's
    newest rows are one slice of its key): the same rows, in the same order, across every page."""
    sql_seen: list[str] = []
    query = db.query
    monkeypatch.setattr(db, "query", lambda sql, *a, **k: (sql_seen.append(sql), query(sql, *a, **k))[1])
    from_copy = all_rows(db, "events", A, params, limit=3)
    assert from_copy and sql_seen and all("event_log_by_time FINAL" in s for s in sql_seen)
    monkeypatch.setitem(views.SPECS, "events", replace(views.SPECS["events"], by_time=""))
    sql_seen.clear()
    assert all_rows(db, "events", A, params, limit=3) == from_copy
    assert sql_seen and not any("event_log_by_time" in s for s in sql_seen)
    monkeypatch.undo()
    sql_seen.clear()
    email = next(r["email"] for r in from_copy if r["email"])
    monkeypatch.setattr(db, "query", lambda sql, *a, **k: (sql_seen.append(sql), query(sql, *a, **k))[1])
    assert all_rows(db, "events", A, params | {"email": email}) == [r for r in from_copy if r["email"] == email]
    assert not any("event_log_by_time" in s for s in sql_seen)  # one contact: event_log's own order


@pytest.mark.parametrize("params", [RANGE, RANGE | {"lang": "fr", "workflow_point": "started"}])
def test_scenario_pages_of_one_contact_read_the_copy_by_contact_and_equal_scenario_logs(db, monkeypatch, params):
    """scenario_log is sorted by scenario; a page with an email reads scenario_log_by_contact (one contact's
    rows are one slice of its key): the same rows, in the same order, across every page."""
    sql_seen: list[str] = []
    query = db.query
    monkeypatch.setattr(db, "query", lambda sql, *a, **k: (sql_seen.append(sql), query(sql, *a, **k))[1])
    everyone = all_rows(db, "scenarios", story.ACCOUNT, params)
    assert everyone and not any("scenario_log_by_contact" in s for s in sql_seen)  # no email: scenario_log
    for email in sorted({r["user_email"] for r in everyone}):
        sql_seen.clear()
        from_copy = all_rows(db, "scenarios", story.ACCOUNT, params | {"email": email.upper()}, limit=2)
        assert from_copy == [r for r in everyone if r["user_email"] == email], email
        assert sql_seen and all("scenario_log_by_contact FINAL" in s for s in sql_seen)
    monkeypatch.setitem(views.SPECS, "scenarios", replace(views.SPECS["scenarios"], by_email=""))
    assert all_rows(db, "scenarios", story.ACCOUNT, params | {"email": email}, limit=2) == from_copy


def test_csv_cells_are_quoted_and_protected_against_formulas(db):
    data = b"".join(csv_chunks(db, "events", A, RANGE | {"event_type": "form"}))
    names = [r[2] for r in _read_csv(data)[1:]]
    assert "'=HYPERLINK(\"http://evil.example\")" in names
    assert 'Line 1\nLine 2, "quoted"; tab\tend' in names  # newline, quote, comma and tab survive
    by_name = {r[2]: r for r in _read_csv(b"".join(csv_chunks(db, "events", A, RANGE)))[1:]}
    assert {"'@SUM(1+1)", "'+cmd", "'-minus", "'\tstarts with a tab"} <= set(by_name)
    assert csv_export.count_records(data) == len(names) + 1  # and the header
    records = data.split(b"\r\n", 1)[1]  # without the header: every record starts with its date
    assert csv_export.count_records(records, dated=True) == csv_export.count_records(records) == len(names)
    assert csv_export.count_records(b"", dated=True) == 0
    # the CLI counts a dump read from the worker in pieces cut anywhere: inside a quoted cell, between the
    # two quotes of a doubled one, right after a line end
    whole = csv_export.count_records(data)
    for cut in range(len(data) + 1):
        counter = csv_export.RecordCounter()
        assert counter.feed(data[:cut]) + counter.feed(data[cut:]) == whole, cut
    counter = csv_export.RecordCounter()
    assert sum(counter.feed(data[i:i + 7]) for i in range(0, len(data), 7)) == whole
    assert escape_cell("\tx") == "'\tx" and escape_cell("\rx") == "'\rx" and escape_cell("a=b") == "a=b"


def test_csv_checks_parameters_at_the_first_chunk_and_an_empty_account_gets_a_header(db):
    chunks = csv_chunks(db, "events", A, {"emial": "x"})
    with pytest.raises(QueryError, match="emial"):
        next(chunks)
    for paging in ({"limit": "2"}, {"cursor": "abc"}):  # a page's parameters: a dump is every row of the range
        with pytest.raises(QueryError, match="a dump has every row"):
            next(csv_chunks(db, "events", A, RANGE | paging))
    assert _read_csv(b"".join(csv_chunks(db, "events", "acct-nobody", {}))) == [[*views.COLUMNS["events"][1:],
                                                                                 "event_id"]]


# ---- isolation and injection ---------------------------------------------------------------------------------

def test_another_account_gets_nothing_of_this_one(db):
    a, b = ids(db, "events", A, RANGE), ids(db, "events", B, RANGE)
    assert a == b  # same event ids in both accounts...
    assert views.detail(db, "events", B, "ex-form-4")["account_id"] == B  # ...each sees its own copy
    assert views.page(db, "events", "acct-nobody", RANGE)["rows"] == []
    assert views.detail(db, "events", "acct-nobody", "ex-form-4") is None
    assert views.detail(db, "scenarios", "acct-story-b", "sc-welcome|story-01")["account_id"] == "acct-story-b"
    assert views.detail(db, "contacts", "acct-nobody", f"sc-welcome|{story.BOB}") is None
    assert ids(db, "scenarios", "acct-nobody", RANGE) == set() == ids(db, "contacts", "acct-nobody", {"status": "all"})
    assert all(r["user_email"] for r in views.page(db, "scenarios", "acct-story-b", RANGE)["rows"])


@pytest.mark.parametrize("view", views.VIEWS)
def test_injection_attempts_return_an_error_or_nothing(db, view):
    account = A if view == "events" else story.ACCOUNT
    before = db.rows("SELECT count() FROM {db}.event_log FINAL")
    for name in views.FILTERS[view]:
        for payload in INJECTIONS:
            try:
                rows = views.page(db, view, account, RANGE | {name: payload})["rows"]
            except QueryError:
                continue
            if name == "name":  # "contains": only names that literally hold the payload
                assert all(payload.lower() in r["name"].lower() for r in rows), payload
            else:
                assert rows == [], (name, payload)
    for name in ("from", "to", "tz", "lang", "limit", "cursor"):
        for payload in INJECTIONS:
            with pytest.raises(QueryError):
                views.page(db, view, account, {name: payload} | ({"from": "2026-11-19"} if name == "to" else {}))
    for payload in INJECTIONS + ["x|' OR 1=1 --", "|", "sc-welcome|' OR '1'='1"]:
        try:
            assert views.detail(db, view, account, payload) is None
        except QueryError:
            pass
        assert views.page(db, view, payload, RANGE)["rows"] == []
    assert db.rows("SELECT count() FROM {db}.event_log FINAL") == before


# ---- tz, lang, detail, errors -------------------------------------------------------------------------------

def test_tz_moves_the_bounds_and_the_displayed_dates(db):
    day = {"from": "2026-11-20", "to": "2026-11-20"}
    utc = views.page(db, "events", A, day | {"limit": "1000"})
    paris = views.page(db, "events", A, day | {"tz": "Europe/Paris", "limit": "1000"})
    assert "ex-page-35" in {r["id"] for r in paris["rows"]} - {r["id"] for r in utc["rows"]}  # 00:30 in Paris
    assert "ex-page-36" in {r["id"] for r in utc["rows"]} - {r["id"] for r in paris["rows"]}  # 00:30 next day
    assert (paris["from"], paris["to"], paris["tz"]) == ("2026-11-20T00:00:00.000+01:00",
                                                         "2026-11-20T23:59:59.999+01:00", "Europe/Paris")
    row = next(r for r in paris["rows"] if r["id"] == "ex-track-0")
    assert row["date"] == "2026-11-20T10:00:00.000+01:00"
    assert next(r for r in utc["rows"] if r["id"] == "ex-track-0")["date"] == "2026-11-20T09:00:00.000+00:00"
    johns = views.page(db, "events", A, {"from": "2026-11-20T05:30:00", "to": "2026-11-20T05:30:00.999",
                                         "tz": "America/St_Johns"})
    assert [(r["id"], r["date"]) for r in johns["rows"]] == [("ex-track-0", "2026-11-20T05:30:00.000-03:30")]
    offset = views.page(db, "events", A, {"from": "2026-11-20T10:00:00+01:00", "to": "2026-11-20T09:00:00.5Z"})
    assert views.page(db, "events", A, {"from": "20261120", "to": "20261120"})["to"] == "2026-11-20T23:59:59.999+00:00"
    assert [r["id"] for r in offset["rows"]] == ["ex-track-0"]


def test_lang_renders_messages_and_internal_requests(db):
    en = views.page(db, "scenarios", story.ACCOUNT, RANGE | {"email": story.ANN, "limit": "100"})["rows"]
    fr = views.page(db, "scenarios", story.ACCOUNT, RANGE | {"email": story.ANN, "lang": "fr", "limit": "100"})["rows"]
    assert en[0]["message"] == "Contact left the scenario (goal reached)" and en[0]["workflow_points"] == "exited"
    assert fr[0]["message"] == "Le contact a quitté le scénario (objectif atteint)"
    assert fr[0]["workflow_points"] == "quitté"
    assert "A soumis le formulaire Newsletter" in {r["message"] for r in fr}
    assert {r["ip"] for r in views.page(db, "events", A, RANGE | {"ip": "internal", "lang": "fr"})["rows"]} == {
        "requête interne"}
    assert {r["ip"] for r in views.page(db, "events", A, RANGE | {"ip": "internal"})["rows"]} == {"internal request"}


def test_an_email_engagement_without_ip_is_unknown_not_internal(db):
    """The email services' webhooks never carry the contact's IP: an open without one is not the platform's
    own doing. The pages, the ip=internal filter and the analyst view agree."""
    rows = views.page(db, "events", A, RANGE | {"limit": "1000"})["rows"]
    by_type = {}
    for r in rows:
        by_type.setdefault(r["type"], set()).add(r["ip"])
    emails = set().union(*(ips for t, ips in by_type.items() if t.startswith(("campaign_", "templates_"))))
    assert "" in emails and "internal request" not in emails, by_type
    assert "internal request" in set().union(*(ips for t, ips in by_type.items() if t.startswith("automation_")))
    internal = {r["id"] for r in views.page(db, "events", A, RANGE | {"ip": "internal", "limit": "1000"})["rows"]}
    assert internal == {r["id"] for r in rows if r["ip"] == "internal request"}
    shown = dict(db.rows("SELECT event_id, ip FROM {db}.v_event_log WHERE account_id = {a:String}", {"a": A}))
    assert {r["id"]: r["ip"] for r in rows} == {k: v for k, v in shown.items() if k in {r["id"] for r in rows}}


def test_detail_returns_every_column_of_the_line(db):
    def columns(table):
        return {r[0] for r in db.rows("SELECT name FROM system.columns WHERE database = {d:String} "
                                      "AND table = {t:String}", {"d": db.database, "t": table})}

    ev = views.detail(db, "events", A, "ex-track-0", tz="Europe/Paris")
    assert columns("event_log") <= set(ev) and ev["properties"] == {"order_id": "o-1", "total": 42.5}
    assert ev["occurred_at"] == "2026-11-20T10:00:00.000+01:00" and ev["account_id"] == A
    assert views.detail(db, "events", A, "ex-automation_exited-17")["details"]["reason"] == "goal_reached"
    sc = views.detail(db, "scenarios", story.ACCOUNT, "sc-welcome|story-08", lang="fr")
    assert columns("scenario_log") <= set(sc) and sc["message"] == "Le contact a quitté le scénario (objectif atteint)"
    assert sc["message_params"] == {"reason": "goal_reached"}
    co = views.detail(db, "contacts", story.ACCOUNT, f"sc-welcome|{story.BOB}")
    assert columns("enrollment_state") <= set(co) and co["status"] == "waiting" and co["step_id"] == "s2"
    assert views.detail(db, "events", A, "no-such-event") is None


def test_detail_shows_the_ip_as_the_line_does_and_has_the_help_pages_names(db):
    """The help page replaces an internal event's IP by "requête interne" and names the expanded fields
    created_at, email_id, sib_type (events) and user_email, workflow_points (scenarios)."""
    lines = views.page(db, "events", A, RANGE | {"limit": "1000", "lang": "fr"})["rows"]
    assert {r["ip"] for r in lines} >= {"requête interne", "", "203.0.113.7"}
    for line in lines:
        ev = views.detail(db, "events", A, line["id"], lang="fr")
        assert ev["ip"] == line["ip"], line
        assert (ev["created_at"], ev["email_id"], ev["sib_type"]) == (ev["occurred_at"], line["email"], line["type"])
    sc = views.detail(db, "scenarios", story.ACCOUNT, "sc-welcome|story-08", lang="fr")
    assert (sc["user_email"], sc["date"], sc["workflow_points"]) == (sc["email"], sc["occurred_at"], "quitté")


def test_scenario_lines_name_their_contact_by_id_too(db):
    """A contact the engine knows by id alone has no email: without the id its lines named nobody."""
    lines = views.page(db, "scenarios", story.ACCOUNT, RANGE | {"limit": "1000"})["rows"]
    assert lines and all(r["contact_id"] == str(story.IDS[r["user_email"]]) for r in lines)


def _cursor(db, params: dict) -> str:
    return views.page(db, "events", A, params | {"limit": "1"})["next_cursor"]


@pytest.mark.parametrize("params,words", [
    ({"from": "yesterday-ish"}, "from"),
    ({"from": "2026-11-21", "to": "2026-11-19"}, "from"),
    # 02:30 does not exist in Paris that night (it is 03:30 after the change): reversed, though not by wall clock
    ({"from": "2026-03-29T02:30", "to": "2026-03-29T03:00", "tz": "Europe/Paris"}, "is after to"),
    ({"to": "2026-13-45"}, "to"),
    ({"from": "1066-10-14"}, "from"),
    ({"limit": "5000"}, "limit"), ({"limit": "0"}, "limit"), ({"limit": "ten"}, "limit"),
    ({"emial": "x@example.com"}, "did you mean 'email'"),
    ({"cursor": "bm90IGEgY3Vyc29y"}, "cursor"),
    ({"tz": "Mars/Olympus"}, "tz"), ({"tz": "../../etc/passwd"}, "tz"),
    ({"lang": "de"}, "lang"),
    ({"event_type": "nope"}, "event_type"), ({"contact_id": "-1"}, "contact_id"),
    ({"template_id": "99999999999999999999999"}, "template_id"),
    # only valid addresses are stored: anything else would be an empty page that looks like "no events"
    ({"email": "NOT-AN-EMAIL"}, "'NOT-AN-EMAIL' is not an email address"),
    ({"ip": "notanip"}, "'notanip' is not an IP address"),
])
def test_bad_parameters_raise_a_clear_query_error(db, params, words):
    with pytest.raises(QueryError, match=words.replace("(", r"\(")):
        views.page(db, "events", A, params)


def test_a_cursor_only_works_for_its_view_and_filters(db):
    cursor = _cursor(db, RANGE)
    assert views.page(db, "events", A, RANGE | {"cursor": cursor, "limit": "1", "lang": "fr"})["rows"]
    for view, account, params in (("events", A, RANGE | {"email": "contact1@example.com"}),
                                  ("events", A, {"from": "2026-11-18", "to": "2026-11-21"}),
                                  ("events", B, RANGE), ("scenarios", story.ACCOUNT, RANGE)):
        with pytest.raises(QueryError, match="cursor"):
            views.page(db, view, account, params | {"cursor": cursor})
    key, bounds, check = json.loads(base64.urlsafe_b64decode(cursor + "=="))
    for forged in ([[key[0] + 1, key[1]], bounds, check], [key, [0, bounds[1]], check], [["x", "y"], bounds, check]):
        raw = base64.urlsafe_b64encode(json.dumps(forged).encode()).decode()
        with pytest.raises(QueryError, match="cursor"):
            views.page(db, "events", A, RANGE | {"cursor": raw})
    with pytest.raises(QueryError, match="status must be 'all' or one or more of active, waiting, exited, removed"):
        views.page(db, "contacts", A, {"status": "gone"})
    with pytest.raises(QueryError, match="workflow_point"):
        views.page(db, "scenarios", A, {"workflow_point": "x"})
    with pytest.raises(QueryError, match="unknown view"):
        views.page(db, "accounts", A, {})
    with pytest.raises(QueryError, match="account"):
        views.page(db, "events", "", {})
    with pytest.raises(QueryError, match="scenario_id"):
        views.detail(db, "scenarios", A, "no-separator")


def test_a_send_after_a_manual_removal_is_marked_on_the_page_and_can_be_filtered(db):
    from processors.scenarios import ATTRIBUTIONS, SCENARIO_LOG_COLUMNS
    from schemas.messages import ATTRIBUTION_LABELS

    assert set(ATTRIBUTION_LABELS) == set(ATTRIBUTIONS)
    account, at = "acct-after", datetime(2026, 11, 20, 10, 0, tzinfo=timezone.utc)
    row = dict.fromkeys(SCENARIO_LOG_COLUMNS, "") | {
        "account_id": account, "scenario_id": "sc", "scenario_name": "Relance", "occurred_at": at, "contact_id": 0,
        "email": "marc@example.com", "step_id": "s4", "type": "automation_action",
        "message_code": "automation_email_sent", "message_params": '{"name":"-10%"}', "src_partition": 0,
        "src_offset": 0}
    db.insert("scenario_log", [[{**row, "attribution": a, "source_event_id": a}[c] for c in SCENARIO_LOG_COLUMNS]
                               for a in ("automation", "after_removal")], SCENARIO_LOG_COLUMNS)
    params = {"from": "2026-11-20", "to": "2026-11-21", "lang": "fr"}
    page = views.page(db, "scenarios", account, params | {"attribution": "after_removal"})
    assert [(r["attribution"], r["message"]) for r in page["rows"]] == [
        ("après la suppression manuelle", "Email -10% envoyé")]
    by_contact = views.page(db, "scenarios", account, params | {"email": "marc@example.com"})
    assert sorted(r["attribution"] for r in by_contact["rows"]) == ["après la suppression manuelle",
                                                                    "événement du scénario"]


def test_the_detail_of_an_id_two_rows_share_is_the_newer(db):
    """A producer that re-sent an event with another time made two rows: the detail shows the newer, not
    whichever the engine reads first."""
    ev = example("form", 90, account="acct-resent", event_id="resent-1")  # its own account: db is shared
    later = dict(ev, occurred_at=(datetime.fromisoformat(ev["occurred_at"]) + timedelta(minutes=3)).isoformat())
    db.insert("event_log", _rows([later, ev]), EVENT_LOG_COLUMNS)
    shown = views.detail(db, "events", "acct-resent", "resent-1", tz="UTC")
    assert shown["occurred_at"].startswith(later["occurred_at"][:19]), shown["occurred_at"]


def test_a_name_filter_ignores_accents_and_case(db):
    """A marketer typing `ete` (or `ÉTÉ`) finds the form "Soldes d'été"; `e` alone does not match `é` in
    positionCaseInsensitiveUTF8 by itself (found in review)."""
    ev = example("form", 91, account="acct-accents", event_id="accents-1", form_name="Soldes d'été")
    curly = example("form", 93, account="acct-accents", event_id="accents-3", form_name="Soldes d’hiver")
    other = example("form", 92, account="acct-accents", event_id="accents-2", form_name="Newsletter")
    db.insert("event_log", _rows([ev, curly, other]), EVENT_LOG_COLUMNS)
    for typed in ("ete", "ÉTÉ", "d'été", "soldes d'ete", "SOLDES D’ÉTÉ"):
        rows = views.page(db, "events", "acct-accents", RANGE | {"name": typed})["rows"]
        assert [r["id"] for r in rows] == ["accents-1"], typed
    for typed in ("d'hiver", "D’HIVER"):  # a typographic apostrophe is a plain one, either side
        assert [r["id"] for r in views.page(db, "events", "acct-accents", RANGE | {"name": typed})["rows"]] == \
            ["accents-3"], typed
