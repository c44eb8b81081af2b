"""CSV dumps of a view: one header, UTF-8, RFC 4180 (CRLF), formatted by ClickHouse, in bounded chunks.

The columns are those of the view's page rows without `id`, with the same values (dates in `tz`,
messages in `lang`), except that a cell starting with = + - @ TAB or CR gets a leading ' so that a
spreadsheet does not run it as a formula. `limit` and `cursor` are ignored: a dump has every row of the
date range (default: the last 7 days).

Why keyset chunks rather than one result stream: on embedded chdb an open stream holds the engine
handle until it is read to the end, so a slow HTTP client would pause the worker's inserts and every
other read; and one ORDER BY over a whole range needs memory in proportion to the range. Each chunk is
one short query (its CSV, formatted by ClickHouse, between two sort keys found beforehand by a scan of the
keys only), so the engine is free between chunks and memory stays at one chunk whatever the range.

The `events` dump reads `event_log_by_time` (clickhouse/ddl/0006_event_log_by_time.sql), a copy of the
event log sorted by (account_id, occurred_at, event_id): the dump's own order, so a date range is one
contiguous slice of the table, a chunk reads only its own rows (FINAL merges only them), and the next
chunk boundary is found by reading CHUNK_ROWS keys in order (`DUMP_TABLES`). event_log itself is sorted
by contact first: every chunk would read and sort the account's whole range again.

Chunk boundaries are looked up without FINAL: any boundaries split the rows into the same chunks (each
chunk is a FINAL query between two keys, and the copies of one row share its key), so stale copies only
make a chunk a little smaller.
"""
from __future__ import annotations

import csv
import io
from dataclasses import replace
from typing import BinaryIO, Callable, Iterator, Mapping

from query.views import Query, parse

CHUNK_ROWS = 100_000
CHUNKS_PER_SCAN = 10  # views without a time-ordered copy: chunk boundaries found by one scan of the sort keys
# view -> a copy sorted by (account_id, <view time>, <view keys>), the dump's order; partitions by month of the
# time column, so the copies of one row never span two partitions (FINAL need not merge across them).
DUMP_TABLES = {"events": "event_log_by_time"}
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_SETTINGS = "SETTINGS output_format_csv_crlf_end_of_line = 1"
_COPY_SETTINGS = _SETTINGS + ", do_not_merge_across_partitions_select_final = 1"


def guard(sql: str) -> str:
    """SQL of a cell with the anti-formula prefix (the same rule as `escape_cell`)."""
    return rf"replaceRegexpOne({sql}, '^[=+\\-@\\t\\r]', '\'\\0')"


def escape_cell(value: str) -> str:
    """What a page value becomes in the CSV."""
    return "'" + value if value.startswith(FORMULA_STARTS) else value


def csv_chunks(ch, view: str, account_id: str, params: Mapping[str, str]) -> Iterator[bytes]:
    """The header, then whole CSV records, one chunk per query. Parameters are checked at the first next()."""
    q = parse(view, account_id, {k: v for k, v in params.items() if k not in ("limit", "cursor")}, paging=False)
    columns = q.columns()
    header = io.StringIO()
    csv.writer(header, lineterminator="\r\n").writerow([name for name, _ in columns])
    yield header.getvalue().encode()
    select = ", ".join(guard(sql) for _, sql in columns)
    copy = view in DUMP_TABLES
    if copy:
        q = replace(q, spec=replace(q.spec, table=DUMP_TABLES[view]))
    settings = _COPY_SETTINGS if copy else _SETTINGS
    after = None
    while True:
        bounds = [_next_boundary(ch, q, after)] if copy else _boundaries(ch, q, after)
        bounds = [b for b in bounds if b is not None]
        final = len(bounds) < (1 if copy else CHUNKS_PER_SCAN)
        for last in bounds + ([None] if final else []):
            where, p = _between(q, after, last)
            data = ch.client.raw_query(ch.sql(q.sql(select, where, settings)), parameters=p, fmt="CSV")
            if data:
                yield data
            after = last
        if final:
            return


def _between(q: Query, after: list | None, last: list | None) -> tuple[list[str], dict]:
    """Conditions and parameters for the rows after `after` (exclusive) down to `last` (inclusive)."""
    where, p = [], dict(q.params)
    for key, prefix, inclusive in ((after, "after_", False), (last, "last_", True)):
        if key is not None:
            cond, more = q.keyset(key, prefix, inclusive)
            where.append(cond)
            p.update(more)
    return where, p


def _keys_sql(q: Query, where: list[str], tail: str) -> str:
    """The sort keys of the matching rows, newest first, without FINAL (see the module doc)."""
    keys = ", ".join(f"{sql} AS _k{i}" for i, sql in enumerate(q.key_select()))
    return (f"SELECT {keys} FROM {{db}}.{q.spec.table} WHERE {' AND '.join([*q.where, *where])} "
            f"ORDER BY {q.order_by()} {tail}")


def _next_boundary(ch, q: Query, after: list | None) -> list | None:
    """Sort key of the CHUNK_ROWS-th row after `after` (None: fewer rows are left), on a copy sorted like the
    dump: ClickHouse reads the key columns in order and stops there."""
    where, p = _between(q, after, None)
    rows = ch.rows(_keys_sql(q, where, f"LIMIT 1 OFFSET {CHUNK_ROWS - 1}"), p)
    return list(rows[0]) if rows else None


def _boundaries(ch, q: Query, after: list | None) -> list[list]:
    """Sort keys of every CHUNK_ROWS-th row after `after`, for up to CHUNKS_PER_SCAN chunks (keys only:
    memory in proportion to those rows, not to the range)."""
    where, p = _between(q, after, None)
    names = [f"_k{i}" for i in range(len(q.key_select()))]
    order = ", ".join(f"{n} DESC" for n in names)
    inner = _keys_sql(q, where, f"LIMIT {CHUNK_ROWS * CHUNKS_PER_SCAN}")
    return [list(r) for r in ch.rows(
        f"SELECT {', '.join(names)} FROM (SELECT {', '.join(names)}, row_number() OVER (ORDER BY {order}) AS _rn "
        f"FROM ({inner})) WHERE _rn % {CHUNK_ROWS} = 0 ORDER BY {order}", p)]


_NOT_MARKS = bytes(b for b in range(256) if b not in b'"\n')


def count_records(data: bytes) -> int:
    """CSV records in whole records: line ends outside quoted cells (a cell may hold a line break).

    Only quotes and line ends matter, and two adjacent quotes never change which side of a cell a line end
    is on: what is left after dropping the rest is usually line ends alone (C speed, no per-line loop)."""
    marks = data.translate(None, _NOT_MARKS).replace(b'""', b"")
    if b'"' not in marks:
        return len(marks)
    n, inside = 0, False
    for line in marks.split(b"\n")[:-1]:
        if line.count(b'"') & 1:
            inside = not inside
        if not inside:
            n += 1
    return n


def export_csv(ch, view: str, account_id: str, params: Mapping[str, str], out: BinaryIO,
               progress: Callable[[int], None] | None = None) -> int:
    """Write the dump to `out`; returns the rows written. `progress` gets the rows of each chunk as written."""
    rows = 0
    for i, chunk in enumerate(csv_chunks(ch, view, account_id, params)):
        out.write(chunk)
        if i:
            n = count_records(chunk)
            rows += n
            if progress:
                progress(n)
    return rows
