"""The one way autologs talks to ClickHouse: clickhouse-connect, on embedded chdb or on a server.

chdb allows one engine per process and one process per data path, so the client is a per-process
singleton; its queries release the GIL, so async callers run them in a thread (`run`).
"""
from __future__ import annotations

import asyncio
import copy
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Sequence, TypeVar

import clickhouse_connect
import orjson
from clickhouse_connect.driver.binding import quote_identifier
from clickhouse_connect.driver.client import Client

from autologs.config import Settings

T = TypeVar("T")
# ISO 8601 with a UTC offset, as orjson writes datetimes; `basic` would refuse the "T" and the offset.
# `optimize_on_insert = 0`: the tables are ReplacingMergeTrees read with FINAL (or, the contacts copy, the
# highest version first), so an insert need not collapse the copies of a row inside its block; the merges
# and FINAL do. The engine's CPU per event for the simulate mix, 200k events (bench.experiments.engine_cost,
# every thread, merges after included): 11.0 and 11.4 -> 9.3 and 9.6 µs; the event log's inserts 7.0 -> 5.5.
_JSON_INSERT_SETTINGS = {"date_time_input_format": "best_effort", "optimize_on_insert": 0}

_client: Client | None = None
_client_key: str | None = None
_lock = threading.Lock()


class ClickHouseUnavailable(RuntimeError):
    pass


READ_STATEMENTS = ("SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXPLAIN", "EXISTS")
_LEADING = re.compile(r"\A(?:\s+|--[^\n]*(?:\n|\Z)|/\*.*?\*/|\()*", re.S)
_OUTFILE = re.compile(r"\bINTO\s+OUTFILE\b", re.I)
# Strings, quoted names and comments, whose ';' separate nothing.
_QUOTED = re.compile(r"'(?:[^'\\]|\\.|'')*'|\"(?:[^\"\\]|\\.)*\"|`(?:[^`\\]|\\.)*`|--[^\n]*|/\*.*?\*/", re.S)
_SEMICOLON = re.compile(r";\s*(?=;)")  # ";;" counts once
# Functions that read files or reach other systems as the worker: not an analyst's read of autologs' data.
_OUTSIDE = re.compile(r"\b(file|fileCluster|url|urlCluster|remote|remoteSecure|cluster|clusterAllReplicas|s3|s3Cluster|"
                      r"gcs|azureBlobStorage|hdfs|hdfsCluster|mysql|postgresql|mongodb|redis|sqlite|jdbc|odbc|"
                      r"executable|deltaLake|iceberg|hudi)\s*\(", re.I)
_FORMAT = re.compile(r"\bFORMAT\s+([A-Za-z0-9_]+)\s*;?\s*\Z", re.I)  # the client picks the output format


class QueryRefused(ValueError):
    """An analyst's query that is not run at all (see `refuse_unless_read`)."""


def refuse_unless_read(query: str) -> str | None:
    """Why an analyst's query is refused, or None when it only reads.

    Checked before the engine sees it, not left to `readonly`: embedded chdb has one session per process,
    and a write refused under `readonly` leaves that session read-only, so every insert of the worker
    failed after it (found in review; tests/test_api.py holds the worker writing after a refused DROP).
    """
    head = _LEADING.sub("", query, count=1)
    word = re.match(r"[A-Za-z]+", head)
    if word is None or word.group(0).upper() not in READ_STATEMENTS:
        return (f"only read statements run here ({', '.join(READ_STATEMENTS)}); "
                f"this one starts with {(word.group(0) if word else head[:20])!r}")
    outside = _OUTSIDE.search(_QUOTED.sub("", query))
    if outside:
        return (f"{outside.group(1)}(…) reads files or other systems as the worker; only autologs' own tables and "
                "views are read here")
    fmt = _FORMAT.search(_QUOTED.sub("", query))
    if fmt:
        return (f"leave out FORMAT {fmt.group(1)}: the rows are printed for you (`autologs sql --format tsv|json`; "
                "the HTTP API and `autologs export` give CSV)")
    if _OUTFILE.search(query):
        return "INTO OUTFILE would write a file on the worker's machine: use `autologs export` or --format json"
    if _SEMICOLON.sub("", _QUOTED.sub("", query)).rstrip().rstrip(";").count(";"):
        return "one statement at a time (a ';' is followed by another statement)"
    return None


def dsn_for(settings: Settings) -> str:
    if settings.clickhouse_dsn is not None:
        return settings.clickhouse_dsn.get_secret_value()
    return f"chdb://{settings.chdb_path}"


def get_client(settings: Settings) -> Client:
    """The process's client. With chdb a second data path in one process is refused (engine limit)."""
    global _client, _client_key
    dsn = dsn_for(settings)
    with _lock:
        if _client is not None:
            if _client_key != dsn:
                raise ClickHouseUnavailable(
                    f"this process already opened ClickHouse at {_client_key}; chdb allows one engine per "
                    "process. Use one AUTOLOGS_DATA_DIR per process."
                )
            return _client
        if settings.embedded:
            settings.chdb_path.mkdir(parents=True, exist_ok=True)
        try:
            _client = clickhouse_connect.get_client(dsn=dsn)
        except Exception as exc:  # chdb: data path held by another process; server: unreachable
            hint = (
                f"Is another autologs process (a worker?) holding {settings.chdb_path}? Only one process may "
                "open an embedded ClickHouse; stop it or go through its API."
                if settings.embedded else "Check AUTOLOGS_CLICKHOUSE_DSN and that the server answers."
            )
            raise ClickHouseUnavailable(f"cannot open ClickHouse ({exc}). {hint}") from exc
        _client_key = dsn
        return _client


class ClickHouse:
    """Database-aware helper around the process client; `{db}` in SQL is the autologs database."""

    def __init__(self, settings: Settings, database: str | None = None, threads: int = 1):
        self.settings = settings
        self.database = database or settings.clickhouse_database
        self.client = get_client(settings)
        # Off the event loop. The client serves concurrent threads (measured on chdb: inserts and
        # queries side by side), so readers get their own pool and never wait behind a long insert.
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="clickhouse")
        self._settings_known: dict[str, bool] = {}

    def lane(self) -> "ClickHouse":
        """This helper with a thread of its own: each table's inserts keep their order in their lane, and
        the lanes of several tables run side by side (the engine parses, sorts and compresses each insert on
        its own thread, so one lane for every table made the tables wait for each other)."""
        other = copy.copy(self)
        other._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clickhouse")
        return other

    def sql(self, text: str) -> str:
        return text.replace("{db}", f"`{self.database}`")

    def command(self, text: str, parameters: dict | None = None, settings: dict | None = None) -> Any:
        return self.client.command(self.sql(text), parameters=parameters, settings=settings)

    def query(self, text: str, parameters: dict | None = None, settings: dict | None = None):
        return self.client.query(self.sql(text), parameters=parameters, settings=settings)

    def supported(self, settings: dict[str, Any]) -> dict[str, Any] | None:
        """The settings this engine knows: a query-speed setting must not fail a read on an older server."""
        unknown = [name for name in settings if name not in self._settings_known]
        if unknown:
            known = {name for name, in self.client.query(
                "SELECT name FROM system.settings WHERE name IN {names:Array(String)}", {"names": unknown}).result_rows}
            self._settings_known.update({name: name in known for name in unknown})
        return {k: v for k, v in settings.items() if self._settings_known[k]} or None

    def rows(self, text: str, parameters: dict | None = None, settings: dict | None = None) -> list[tuple]:
        return self.query(text, parameters, settings).result_rows

    def insert(self, table: str, rows: Sequence[Sequence[Any]], columns: Sequence[str], *,
               column_oriented: bool = False) -> None:
        """Insert rows (or, `column_oriented`, one sequence per column) as JSON written by orjson in one call.

        Why not clickhouse-connect's Native blocks: it builds them in Python, 2.1 µs per event-log row with
        the GIL held, while the engine parses this JSON without it (0.58 µs per row in orjson). Measured with
        inserts running beside Python work, as in the worker: that work ran at 0.58-0.61 of its speed beside
        Native inserts and at 0.78-0.87 beside JSON ones, which also wrote 1.2-1.4x the rows per second.
        Values are what orjson writes: str, int, float, bool, None, datetime and date (ISO 8601, read
        with `best_effort`), lists.
        """
        if not rows:
            return
        body = orjson.dumps(rows)
        if column_oriented:
            fmt = "JSONCompactColumns"  # [[column 1], [column 2], ...]: the body as orjson wrote it
        else:
            fmt, body = "JSONCompactEachRow", body[1:-1]  # rows separated by commas, without the outer array
        self.client.raw_insert(f"{quote_identifier(self.database)}.{quote_identifier(table)}", list(columns), body,
                               settings=_JSON_INSERT_SETTINGS, fmt=fmt)

    def ensure_database(self) -> None:
        self.command("CREATE DATABASE IF NOT EXISTS {db}")

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking call in this helper's thread so Faust's event loop keeps going."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
