"""DDL, migrations and schema checks on the real ClickHouse engine (the session's `ch` fixture).

Scratch databases share the process's single chdb engine (`ClickHouse(settings, database=...)`) and
are dropped at the end of each test.
"""
from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pytest
from pydantic import Field

from autologs import migrate
from autologs.clickhouse import ClickHouse
from autologs.schema_check import (
    ddl_file_problems,
    materialized_view_problems,
    model_problems,
    parse_view_header,
    type_mismatch,
)
from schemas.rows import EVENT_LOG_COLUMNS


@pytest.fixture
def scratch(ch):
    """Factory of fresh scratch databases on the session's engine; all dropped afterwards."""
    made: list[ClickHouse] = []

    def make(tag: str) -> ClickHouse:
        db = ClickHouse(ch.settings, database=f"{ch.database}_{tag}_{uuid.uuid4().hex[:6]}")
        db.command("DROP DATABASE IF EXISTS {db}")
        db.ensure_database()
        made.append(db)
        return db

    yield make
    for db in made:
        db.command("DROP DATABASE IF EXISTS {db}")
        db.close()
    left = {r[0] for r in ch.rows("SELECT name FROM system.databases")}
    assert not left & {db.database for db in made}


def tables(db: ClickHouse) -> set[str]:
    return {r[0] for r in db.rows("SELECT name FROM system.tables WHERE database = {d:String}",
                                  parameters={"d": db.database})}


# --- the real schema -------------------------------------------------------------------------------


def test_migrated_database_has_no_schema_problems(ch):
    assert {"event_log", "schema_migrations"} <= tables(ch)
    assert model_problems(ch) == []
    assert materialized_view_problems(ch) == []
    assert ddl_file_problems(migrate.DDL_DIR) == []


def test_the_read_layer_knows_the_sorting_key_of_every_table_it_reads(ch):
    """A condition on these columns runs as PREWHERE under FINAL: a column wrongly listed would let a stale
    copy of a row through a filter."""
    from query.views import SORTING_KEYS, SPECS

    read = {t for spec in SPECS.values() for t in (spec.table, spec.by_time, spec.by_email, spec.by_entry) if t}
    assert read == set(SORTING_KEYS)
    actual = dict(ch.rows("SELECT name, sorting_key FROM system.tables WHERE database = {d:String}",
                          parameters={"d": ch.database}))
    for table, key in SORTING_KEYS.items():
        assert key == {c.strip() for c in actual[table].split(",")}, table


def test_a_page_filters_on_sorting_key_columns_before_final_and_on_the_others_after():
    from query.views import parse

    q = parse("contacts", "acct", {"email": "a@b.c", "scenario": "sc", "cursor": ""})
    sql = q.sql("1", ["(entered_at, scenario_id, contact_key) < (now(), 'x', 'y')"])
    pre, post = sql.split(" PREWHERE ")[1].split(" WHERE ")
    assert "account_id" in pre and "scenario_id = " in pre and "status" not in pre and " email = " not in pre
    assert "contact_key = {f_email:String}" in pre  # View.email_key: the email narrows the key too
    assert "status IN" in post and post.startswith("email = ") and "entered_at" in post  # not in the sorting key
    q = parse("events", "acct", {"email": "a@b.c", "event_type": "page"})
    pre, post = q.sql("1").split(" PREWHERE ")[1].split(" WHERE ")
    assert "email = " in pre and "occurred_at >= " in pre and "event_type" in post
    # a time slice of the account (every row of the granules read passes): all in WHERE
    assert "PREWHERE" not in parse("events", "acct", {"event_type": "page"}).sql("1")
    assert "PREWHERE" not in parse("contacts", "acct", {}).sql("1")


def test_event_log_accepts_a_row_of_the_row_writer(ch):
    """A row built by schemas.rows goes into the migrated event_log and reads back (insert by names)."""
    from datetime import datetime, timezone

    from schemas.events import EVENT_ADAPTER
    from schemas.rows import Source, event_log_row

    ev = EVENT_ADAPTER.validate_python({
        "type": "automation_waiting", "event_id": f"ddl-{uuid.uuid4().hex}", "account_id": "acc_ddl",
        "occurred_at": "2024-05-01T10:00:00.123Z", "email": "A@B.co", "contact_id": 5, "automation_id": "a1",
        "step_id": "s1", "wait_until": "2024-05-03T10:00:00Z", "properties": {"k": [1, 2]}})
    ch.insert("event_log", [event_log_row(ev, Source("events", 1, 77))], EVENT_LOG_COLUMNS)
    got = ch.rows("SELECT event_type, occurred_at, contact_id, email, step_id, properties, details, src_offset "
                  "FROM {db}.event_log FINAL WHERE event_id = {e:String}", parameters={"e": ev["event_id"]})
    assert len(got) == 1
    event_type, occurred_at, contact_id, email, step_id, properties, details, src_offset = got[0]
    assert (event_type, contact_id, email, step_id, src_offset) == ("automation_waiting", 5, "a@b.co", "s1", 77)
    assert occurred_at.replace(tzinfo=timezone.utc) == datetime(2024, 5, 1, 10, 0, 0, 123000, tzinfo=timezone.utc)
    assert properties == '{"k":[1,2]}'
    assert '"wait_until":"2024-05-03T10:00:00+00:00"' in details
    ch.command("DELETE FROM {db}.event_log WHERE event_id = {e:String}", parameters={"e": ev["event_id"]})


def test_the_tables_every_event_writes_merge_fewer_times(ch):
    """0014: their merges were the largest part of the engine's CPU in the worker (bench/HISTORY.md); 0015."""
    tables = dict(ch.rows("SELECT name, create_table_query FROM system.tables WHERE database = {d:String} AND "
                          "engine LIKE '%MergeTree'", {"d": ch.database}))
    written = ("event_log", "scenario_log", "scenario_log_by_contact", "enrollment_state", "enrollment_state_by_entry")
    assert all("merge_selector_base = 10" in tables[t] for t in written), {t: tables[t][-120:] for t in written}
    # 0015: the copy CSV dumps read merges as before (fewer parts: less memory for a dump)
    assert "merge_selector_base = 5" in tables["event_log_by_time"], tables["event_log_by_time"][-120:]


def test_migrations_are_recorded_and_idempotent(ch, scratch):
    files = migrate.discover()
    assert files, "no DDL file found"
    assert migrate.applied(ch) == {m.id: m.checksum() for m in files}
    assert migrate.migrate(ch) == []
    assert migrate.plan(ch) == []
    # A migration that died half-way is applied again from its first statement (the runner applies files in
    # order and records each once done): every file's statements run twice in a row without error.
    db = scratch("twice")
    for m in files:
        for _ in range(2):
            for statement in m.statements():
                db.command(statement)
    assert model_problems(db) == []


def test_a_new_file_is_planned_and_an_edited_one_is_refused(scratch, tmp_path):
    ddl = tmp_path / "ddl"
    shutil.copytree(migrate.DDL_DIR, ddl)
    db = scratch("edit")
    applied = migrate.migrate(db, ddl)
    assert [m.id for m in applied] == [m.id for m in migrate.discover(ddl)]
    assert "event_log" in tables(db)
    assert migrate.plan(db, ddl) == []

    # A new file: planned, then applied, and only it.
    (ddl / "0999_extra.sql").write_text(
        "CREATE TABLE IF NOT EXISTS {db}.extra (account_id String, x UInt8) ENGINE = MergeTree "
        "ORDER BY (account_id, x);\n")
    assert [m.id for m in migrate.plan(db, ddl)] == ["0999_extra"]
    assert [m.id for m in migrate.migrate(db, ddl)] == ["0999_extra"]
    assert "extra" in tables(db)
    assert migrate.plan(db, ddl) == []

    # An applied file edited, even by a comment: refused, naming the file.
    first = sorted(ddl.glob("*.sql"))[0]
    original = first.read_text()
    first.write_text(original + "\n-- an afterthought\n")
    with pytest.raises(ValueError, match=first.name):
        migrate.plan(db, ddl)
    with pytest.raises(ValueError, match="edited"):
        migrate.migrate(db, ddl)
    first.write_text(original)
    assert migrate.plan(db, ddl) == []


# --- the materialized-view checker can fail ---------------------------------------------------------


def test_materialized_view_checker_reports_wrong_order_type_and_missing_to(scratch):
    db = scratch("mv")
    db.command("CREATE TABLE {db}.src (account_id String, x String, y UInt32) ENGINE = MergeTree "
               "ORDER BY account_id")
    db.command("CREATE TABLE {db}.target (a String, b UInt32) ENGINE = MergeTree ORDER BY a")
    db.command("CREATE MATERIALIZED VIEW {db}.mv_good TO {db}.target AS SELECT x AS a, y AS b FROM {db}.src")
    db.command("CREATE MATERIALIZED VIEW {db}.mv_order TO {db}.target AS SELECT y AS b, x AS a FROM {db}.src")
    db.command("CREATE MATERIALIZED VIEW {db}.mv_type TO {db}.target AS SELECT x AS a, toInt32(y) AS b "
               "FROM {db}.src")
    db.command("CREATE MATERIALIZED VIEW {db}.mv_declared TO {db}.target (a String, b UInt32) AS "
               "SELECT x AS a, toString(y) AS b FROM {db}.src")
    # A view whose target lost a column afterwards (ClickHouse checks names only at CREATE).
    db.command("CREATE TABLE {db}.target2 (a String, c UInt32) ENGINE = MergeTree ORDER BY a")
    db.command("CREATE MATERIALIZED VIEW {db}.mv_extra TO {db}.target2 AS SELECT x AS a, y AS c FROM {db}.src")
    db.command("ALTER TABLE {db}.target2 DROP COLUMN c")
    db.command("CREATE MATERIALIZED VIEW {db}.mv_inner ENGINE = MergeTree ORDER BY a AS "
               "SELECT x AS a FROM {db}.src")
    db.command("CREATE MATERIALIZED VIEW {db}.mv_populate ENGINE = MergeTree ORDER BY a POPULATE AS "
               "SELECT x AS a FROM {db}.src")

    problems = materialized_view_problems(db)
    by_view: dict[str, list[str]] = {}
    for p in problems:
        view = p.split(":")[0].split(".")[-1]
        by_view.setdefault(view, []).append(p)
    assert "mv_good" not in by_view, by_view.get("mv_good")
    target = f"{db.database}.target"
    assert by_view["mv_order"] == [
        f"mv {db.database}.mv_order: columns in the order (b, a) but target {target} has them in the order (a, b)"]
    assert by_view["mv_type"] == [f"mv {db.database}.mv_type: column b is Int32 but target {target} has UInt32"]
    assert any("SELECT yields column b as String but the view declares UInt32" in p for p in by_view["mv_declared"])
    assert by_view["mv_extra"] == [
        f"mv {db.database}.mv_extra: column c is not a column of its target {db.database}.target2"]
    assert any("has no TO table" in p for p in by_view["mv_inner"])
    assert any("has no TO table" in p for p in by_view["mv_populate"])
    assert set(by_view) == {"mv_order", "mv_type", "mv_declared", "mv_extra", "mv_inner", "mv_populate"}
    # and the migrations (run at every worker start) refuse to go on with them
    with pytest.raises(migrate.SchemaProblem, match="mv_order: columns in the order"):
        migrate.migrate(db)


def test_view_header_parsing():
    h = parse_view_header("CREATE MATERIALIZED VIEW db.v ENGINE = Memory POPULATE AS SELECT 1 AS a")
    assert h.to is None and h.populate
    h = parse_view_header("CREATE MATERIALIZED VIEW IF NOT EXISTS `my db`.v TO `my db`.`t-1` (`a` String) "
                          "AS SELECT 'TO x' AS a FROM db.to_table")
    assert h == (("my db", "t-1"), False)
    assert parse_view_header("CREATE MATERIALIZED VIEW v TO t AS SELECT 1").to == (None, "t")


# --- the model checker can fail --------------------------------------------------------------------


def test_model_checker_reports_missing_wrong_and_unmapped_columns(ch, scratch):
    db = scratch("model")
    cols = ch.rows("SELECT name, type FROM system.columns WHERE database = {d:String} AND table = 'event_log' "
                   "ORDER BY position", parameters={"d": ch.database})
    changed = {"contact_id": "String", "occurred_at": "DateTime('UTC')", "event_id": "UInt64",
               "campaign_id": "Int64"}
    defs = [f"`{n}` {changed.get(n, t)}" for n, t in cols if n != "details"] + ["`legacy_score` Float64"]
    db.command(f"CREATE TABLE {{db}}.event_log ({', '.join(defs)}) ENGINE = MergeTree ORDER BY account_id")
    problems = model_problems(db)
    text = "\n".join(problems)

    def has(*words):
        return any(all(w in p for w in words) for p in problems)

    assert has("field contact_id", "column contact_id (String)"), text
    assert has("field occurred_at", "DateTime64(3, 'UTC')"), text
    assert has("field event_id", "UInt64"), text
    assert has("no details column", "automation_started"), text
    assert has("no column details"), text
    assert has("legacy_score", "unmapped"), text
    # Int64 for a non-negative int is fine; so are the untouched columns.
    assert not has("campaign_id"), text
    assert not has("field email"), text


def test_model_checker_reports_a_missing_table(scratch):
    db = scratch("empty")
    assert model_problems(db) == [f"{db.database}.event_log does not exist"]


def test_type_rules():
    ge0 = [Field(ge=0)]
    assert type_mismatch(int, ge0, "UInt64") is None
    assert type_mismatch(int, [], "UInt64") is not None  # may be negative
    assert type_mismatch(int, [], "Int32") is None
    assert type_mismatch(int, ge0, "String") is not None
    assert type_mismatch(str, [], "LowCardinality(String)") is None
    assert type_mismatch(str, [], "UInt8") is not None
    assert type_mismatch(dict, [], "String") is None
    assert type_mismatch(dict, [], "Map(String, String)") is not None
    from datetime import datetime

    assert type_mismatch(datetime, [], "DateTime64(3, 'UTC')") is None
    assert type_mismatch(datetime, [], "DateTime64(6, 'UTC')") is not None
    assert type_mismatch(datetime, [], "DateTime('UTC')") is not None


# --- the DDL-file checker can fail -----------------------------------------------------------------

GOOD = ("CREATE TABLE IF NOT EXISTS {db}.t (account_id String, x UInt8) ENGINE = MergeTree "
        "ORDER BY (account_id, x);\n")

BAD_DIRS = [
    # (id, files, words one problem must contain)
    ("duplicate number", {"0001_a.sql": GOOD, "0001_b.sql": GOOD.replace(".t ", ".u ")},
     ["share the number 0001", "0001_a.sql", "0001_b.sql"]),
    ("bad file name", {"1_a.sql": GOOD}, ["1_a.sql", "NNNN_name.sql"]),
    ("upper-case file name", {"0001_Events.sql": GOOD}, ["0001_Events.sql", "NNNN_name.sql"]),
    ("no IF NOT EXISTS", {"0001_a.sql": GOOD.replace(" IF NOT EXISTS", "")}, ["0001_a.sql", "no IF NOT EXISTS"]),
    ("OR REPLACE", {"0001_a.sql": GOOD.replace("CREATE TABLE IF NOT EXISTS", "CREATE OR REPLACE TABLE")},
     ["no IF NOT EXISTS", "OR REPLACE"]),
    ("view without IF NOT EXISTS", {"0001_a.sql": GOOD + "CREATE MATERIALIZED VIEW {db}.v TO {db}.t AS "
                                                         "SELECT account_id, x FROM {db}.t;\n"},
     ["statement 2", "no IF NOT EXISTS"]),
    ("ORDER BY without account_id first", {"0001_a.sql": GOOD.replace("(account_id, x)", "(x, account_id)")},
     ["ORDER BY starts with x", "account_id"]),
    ("ORDER BY single column", {"0001_a.sql": GOOD.replace("(account_id, x)", "x")}, ["ORDER BY starts with x"]),
    ("ORDER BY tuple()", {"0001_a.sql": GOOD.replace("(account_id, x)", "tuple()")}, ["ORDER BY starts with tuple"]),
    ("ReplacingMergeTree key", {"0001_a.sql": GOOD.replace("MergeTree", "ReplacingMergeTree")
                                .replace("(account_id, x)", "(x)")}, ["ORDER BY starts with x"]),
    ("POPULATE", {"0001_a.sql": GOOD + "CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.v TO {db}.t POPULATE AS "
                                       "SELECT account_id, x FROM {db}.t;\n"}, ["POPULATE"]),
    ("view without TO", {"0001_a.sql": GOOD + "CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.v ENGINE = MergeTree "
                                              "ORDER BY account_id AS SELECT account_id FROM {db}.t;\n"},
     ["without TO"]),
    ("table without {db}", {"0001_a.sql": GOOD.replace("{db}.t", "t")}, ["refers to table t", "{db}.t"]),
    ("hard-coded database", {"0001_a.sql": GOOD.replace("{db}.t", "autologs.t")}, ["refers to table autologs.t"]),
    ("source without {db}", {"0001_a.sql": GOOD + "CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.v TO {db}.t AS "
                                                  "SELECT account_id, x FROM t;\n"}, ["statement 2", "refers to table t"]),
    ("ALTER ADD without IF NOT EXISTS", {"0001_a.sql": GOOD + "ALTER TABLE {db}.t ADD COLUMN y String;\n"},
     ["ADD COLUMN", "no IF NOT EXISTS"]),
    ("empty file", {"0001_a.sql": "-- nothing yet\n"}, ["holds no statement"]),
]


def write_dir(root: Path, files: dict[str, str]) -> Path:
    root.mkdir()
    for name, text in files.items():
        (root / name).write_text(text)
    return root


def test_ddl_file_checker_accepts_a_good_dir(tmp_path):
    good = GOOD + ("CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.v TO {db}.t AS WITH w AS (SELECT 1) "
                   "SELECT account_id, toUInt8(extract(DAY FROM now())) AS x FROM {db}.t ARRAY JOIN [1] AS z "
                   "WHERE account_id IN (SELECT account_id FROM {db}.t) AND x IN (SELECT * FROM w);\n"
                   "-- a comment line; with a semicolon\n"
                   "ALTER TABLE {db}.t ADD COLUMN IF NOT EXISTS y String COMMENT 'from system.x; or not';\n"
                   "INSERT INTO {db}.t (account_id, x) SELECT 'a', number FROM numbers(3);\n")
    assert ddl_file_problems(write_dir(tmp_path / "d", {"0001_a.sql": good, "0002_b.sql": GOOD})) == []


@pytest.mark.parametrize("files,words", [pytest.param(f, w, id=i) for i, f, w in BAD_DIRS])
def test_ddl_file_checker_reports_bad_files(tmp_path, files, words):
    problems = ddl_file_problems(write_dir(tmp_path / "d", files))
    assert any(all(w in p for w in words) for p in problems), problems


@pytest.mark.parametrize("text,count", [
    (GOOD.replace(";\n", "; -- the table\n") + GOOD.replace(".t ", ".u "), 2),
    (GOOD.replace("x UInt8", "x UInt8 COMMENT 'a;\nb'"), 1),
])
def test_the_runner_splits_on_statement_ends_only(tmp_path, text, count):
    from autologs.migrate import Migration

    path = tmp_path / "0001_a.sql"
    path.write_text(text)
    statements = Migration(1, "a", path).statements()
    assert len(statements) == count
    assert all(st.startswith("CREATE") and not st.endswith(";") for st in statements)
    assert ddl_file_problems(tmp_path) == []


def test_analyst_views_render_messages_as_the_catalogue_does(ch):
    """The view's message expressions were generated from the catalogue: a catalogue change needs a new file."""
    from autologs.migrate import DDL_DIR
    from schemas.messages import render, sql_render_expression

    # The newest file that (re)creates the view is what the database holds.
    text = [f.read_text() for f in sorted(DDL_DIR.glob("*.sql"))
            if "CREATE VIEW IF NOT EXISTS {db}.v_scenario_log" in f.read_text()][-1]
    for lang in ("en", "fr"):
        assert sql_render_expression("message_code", "message_params", lang) in text, lang
    account = f"views-{uuid.uuid4().hex[:6]}"
    ch.command("INSERT INTO {db}.scenario_log (account_id, scenario_id, occurred_at, email, type, message_code, "
               "message_params) VALUES ({a:String}, 'sc', now64(3), 'a@example.com', 'automation_exited', "
               "'automation_exited', '{\"reason\":\"goal_reached\"}')", {"a": account})
    [(en, fr)] = ch.rows("SELECT message_en, message_fr FROM {db}.v_scenario_log WHERE account_id = {a:String}",
                         {"a": account})
    assert (en, fr) == (render("automation_exited", '{"reason":"goal_reached"}', "en"),
                        render("automation_exited", '{"reason":"goal_reached"}', "fr"))
    for code, params in (("automation_waiting_for", '{"wait_for":"ouverture"}'), ("automation_waiting_open", ""),
                         ("automation_waiting_until", '{"wait_until":"2026-11-28T08:00:00+00:00"}')):
        ch.command("INSERT INTO {db}.scenario_log (account_id, scenario_id, occurred_at, email, type, message_code, "
                   "message_params, source_event_id) VALUES ({a:String}, 'sc', now64(3), 'a@example.com', "
                   "'automation_waiting', {c:String}, {p:String}, {c:String})", {"a": account, "c": code, "p": params})
        [(en, fr)] = ch.rows("SELECT message_en, message_fr FROM {db}.v_scenario_log WHERE account_id = {a:String} "
                             "AND source_event_id = {c:String}", {"a": account, "c": code})
        assert (en, fr) == (render(code, params, "en"), render(code, params, "fr")) and "()" not in fr, (en, fr)
        assert not fr.endswith("jusqu'au") and not en.endswith("until"), fr
    [(ip,)] = ch.rows("SELECT count() FROM {db}.v_contacts_in_scenarios WHERE account_id = {a:String}", {"a": account})
    assert ip == 0


def test_every_table_view_and_column_an_analyst_reads_has_a_comment(ch):
    """The README's promise: DESCRIBE tells what each column is (materialized views' own columns are
    plumbing, their targets carry the comments; the migrations ledger is the runner's)."""
    bare = ch.rows("SELECT table, name FROM system.columns WHERE database = {d:String} AND comment = '' "
                   "AND table NOT LIKE '%\\\\_mv' AND table NOT LIKE '%\\\\_\\\\_%' AND table != 'schema_migrations' "
                   "ORDER BY table, position", {"d": ch.database})
    assert bare == []
    tables = ch.rows("SELECT name FROM system.tables WHERE database = {d:String} AND comment = '' "
                     "AND name NOT LIKE '%\\\\_mv' AND name NOT LIKE '%\\\\_\\\\_%' AND name NOT LIKE '.inner%' "
                     "AND name != 'schema_migrations'", {"d": ch.database})
    assert tables == []


def test_every_sql_example_of_the_readme_runs(ch):
    """The Analysts section's queries are meant to be pasted: each must run on the migrated schema."""
    import re
    from pathlib import Path

    from autologs.clickhouse import refuse_unless_read

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    statements = [st for block in re.findall(r"```sql\n(.*?)```", readme, re.S)
                  for st in re.split(r";\s*\n", block) if re.sub(r"--[^\n]*", "", st).strip()]
    assert len(statements) >= 4
    for statement in statements:
        assert refuse_unless_read(statement) is None, statement  # `autologs sql` takes it as it is
        ch.rows(statement)
