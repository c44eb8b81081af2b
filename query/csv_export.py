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
"""
from __future__ import annotations

import csv
import io
from typing import BinaryIO, Callable, Iterator, Mapping

from query.views import Query, parse

CHUNK_ROWS = 50_000
CHUNKS_PER_SCAN = 10  # chunk boundaries found by one scan of the sort keys
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_SETTINGS = "SETTINGS output_format_csv_crlf_end_of_line = 1"


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
    after = None
    while True:
        bounds = _boundaries(ch, q, after)
        final = len(bounds) < CHUNKS_PER_SCAN
        for last in bounds + ([None] if final else []):
            where, p = _between(q, after, last)
            data = ch.client.raw_query(ch.sql(q.sql(select, where, _SETTINGS)), parameters=p, fmt="CSV")
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


def _boundaries(ch, q: Query, after: list | None) -> list[list]:
    """Sort keys of every CHUNK_ROWS-th row after `after`, for up to CHUNKS_PER_SCAN chunks (keys only:
    memory in proportion to those rows, not to the range)."""
    where, p = _between(q, after, None)
    names = [f"_k{i}" for i in range(len(q.key_select()))]
    order = ", ".join(f"{n} DESC" for n in names)
    keys = ", ".join(f"{sql} AS {n}" for sql, n in zip(q.key_select(), names))
    inner = q.sql(keys, where, f"LIMIT {CHUNK_ROWS * CHUNKS_PER_SCAN}")
    return [list(r) for r in ch.rows(
        f"SELECT {', '.join(names)} FROM (SELECT {', '.join(names)}, row_number() OVER (ORDER BY {order}) AS _rn "
        f"FROM ({inner})) WHERE _rn % {CHUNK_ROWS} = 0 ORDER BY {order}", p)]


def count_records(data: bytes) -> int:
    """CSV records in whole records: line ends outside quoted cells (a cell may hold a line break)."""
    n, inside = 0, False
    for line in data.split(b"\n")[:-1]:
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
