"""Numbered DDL files applied in order and recorded in `schema_migrations`.

A landed file is never edited: a change is a new file. Every statement uses IF NOT EXISTS, so a
migration that died half-way is simply applied again.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from autologs.clickhouse import ClickHouse

DDL_DIR = Path(__file__).resolve().parents[1] / "clickhouse" / "ddl"
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    number: int
    name: str
    path: Path

    @property
    def id(self) -> str:
        return self.path.stem

    def statements(self) -> list[str]:
        """Split on `;` tokens, never inside a string or a comment."""
        from autologs.schema_check import split_statements

        text = self.path.read_text()
        return [text[toks[0].pos: toks[-1].pos + len(_raw_token(text, toks[-1]))].strip()
                for toks in split_statements(text)]

    def checksum(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()[:16]


def _raw_token(text: str, tok) -> str:
    """The token as written (quoted names keep their quotes)."""
    if tok.kind == "qid":
        return text[tok.pos: tok.pos + len(tok.value) + 2]
    return tok.value


def discover(ddl_dir: Path = DDL_DIR) -> list[Migration]:
    found = []
    for path in sorted(ddl_dir.glob("*.sql")):
        m = _NAME.match(path.name)
        if not m:
            raise ValueError(f"{path.name}: DDL files are named NNNN_name.sql")
        found.append(Migration(int(m.group(1)), m.group(2), path))
    numbers = [m.number for m in found]
    if len(set(numbers)) != len(numbers):
        raise ValueError(f"two DDL files share a number in {ddl_dir}")
    return found


def _ensure_ledger(ch: ClickHouse) -> None:
    ch.ensure_database()
    ch.command(
        "CREATE TABLE IF NOT EXISTS {db}.schema_migrations (id String, checksum String, "
        "applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) ENGINE = ReplacingMergeTree ORDER BY id "
        "COMMENT 'DDL files applied by autologs migrate'"
    )


def applied(ch: ClickHouse) -> dict[str, str]:
    """Applied migrations; read-only (a database without the ledger has none applied)."""
    exists = ch.rows("SELECT count() FROM system.tables WHERE database = {d:String} AND name = 'schema_migrations'",
                     {"d": ch.database})[0][0]
    if not exists:
        return {}
    return dict(ch.rows("SELECT id, checksum FROM {db}.schema_migrations FINAL"))


def plan(ch: ClickHouse, ddl_dir: Path = DDL_DIR) -> list[Migration]:
    done = applied(ch)
    files = discover(ddl_dir)
    for m in files:
        if m.id in done and done[m.id] != m.checksum():
            raise ValueError(f"{m.path.name} was edited after it was applied; landed DDL files are never "
                             "edited: restore it and put the change in a new file.")
    return [m for m in files if m.id not in done]


class SchemaProblem(ValueError):
    """The database would write wrong rows (a materialized view out of line with its target): nothing may
    start on it until it is fixed."""


def migrate(ch: ClickHouse, ddl_dir: Path = DDL_DIR, progress=None) -> list[Migration]:
    """Apply the pending files, then check every materialized view against its target table.

    The check runs at every migrate and worker start, not only in the tests: a view whose columns are out of
    order or type with its target writes them into the wrong columns without an error (one of the known
    pains of Kafka-to-ClickHouse pipelines), and a view created by hand is checked too."""
    from autologs.schema_check import materialized_view_problems

    _ensure_ledger(ch)
    pending = plan(ch, ddl_dir)
    for m in pending:
        if progress:
            progress(m)
        for statement in m.statements():
            ch.command(statement)
        ch.insert("schema_migrations", [[m.id, m.checksum()]], ["id", "checksum"])
    problems = materialized_view_problems(ch)
    if problems:
        raise SchemaProblem("materialized views that would write wrong rows: " + "; ".join(problems)
                            + ". Drop or fix them (a new DDL file), then start again.")
    return pending


# The copies (event_log_by_time for dumps, scenario_log_by_contact for one contact's pages) keep what
# their source keeps.
RETENTION_TABLES = {"event_log": "event_log_ttl_days", "scenario_log": "scenario_log_ttl_days",
                    "event_log_by_time": "event_log_ttl_days", "scenario_log_by_contact": "scenario_log_ttl_days"}


def retention_changes(ch: ClickHouse, settings) -> list[tuple[str, str]]:
    """(statement, what it does) for each log whose TTL differs from its setting; nothing is changed."""
    changes = []
    for table, setting in RETENTION_TABLES.items():
        days = getattr(settings, setting)
        current = ch.rows("SELECT create_table_query FROM system.tables WHERE database = {d:String} "
                          "AND name = {t:String}", {"d": ch.database, "t": table})
        if not current:
            continue
        has_ttl = " TTL " in current[0][0]
        wanted = f"toDateTime(occurred_at) + toIntervalDay({days})"
        if days > 0 and wanted not in current[0][0].replace("INTERVAL", "toIntervalDay"):
            changes.append((f"ALTER TABLE {{db}}.{table} MODIFY TTL toDateTime(occurred_at) + INTERVAL {int(days)} DAY",
                            f"{table}: rows kept {days} days"))
        elif days == 0 and has_ttl:
            changes.append((f"ALTER TABLE {{db}}.{table} REMOVE TTL", f"{table}: rows kept forever"))
    return changes


def apply_retention(ch: ClickHouse, settings) -> list[str]:
    """Bring each log's TTL to its setting (after the migrations; idempotent, so safe at every start).

    Retention is configuration, not schema: it is not a DDL file, and changing it needs no new file.
    """
    changes = retention_changes(ch, settings)
    for statement, _ in changes:
        ch.command(statement)
    return [what for _, what in changes]
