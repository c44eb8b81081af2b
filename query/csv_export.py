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

`export_csv` (the CLI, the benchmark) streams each chunk's CSV to its file as the engine formats it, from a
thread, so it can take bigger chunks (EXPORT_CHUNK_ROWS: fewer queries) with memory at a few pieces, and the
engine formats while the caller writes; the HTTP API takes whole chunks of CHUNK_ROWS (`csv_chunks`), so a
slow client never holds the engine.

Chunk boundaries are looked up without FINAL: any boundaries split the rows into the same chunks (each
chunk is a FINAL query between two keys, and the copies of one row share its key), so stale copies only
make a chunk a little smaller.
"""
from __future__ import annotations

import csv
import io
import queue
import threading
from dataclasses import replace
from typing import BinaryIO, Callable, Iterator, Mapping

from query.views import SPECS, Query, QueryError, parse

CHUNK_ROWS = 50_000  # rows of one query for whole chunks (csv_chunks without stream: the HTTP API)
CHUNKS_PER_SCAN = 10  # views without a time-ordered copy: chunk boundaries found by one scan of the sort keys
# view -> a copy sorted by (account_id, <view time>, <view keys>), the dump's order; partitions by month of the
# time column, so the copies of one row never span two partitions (FINAL need not merge across them).
DUMP_TABLES = {view: spec.by_time for view, spec in SPECS.items() if spec.by_time}
# Rows of one query when export_csv streams: memory does not grow with it, and each query costs a fixed
# ~0.1 s to set up (measured, 1M rows: 0.49-0.53M rows/s with 250k-row chunks, 0.63-0.72M with 1M-row ones).
EXPORT_CHUNK_ROWS = 1_000_000
STREAM_READ = 1 << 20  # bytes of one streamed piece
PREFETCH = 4  # pieces that export_csv lets the query thread get ahead by
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_SETTINGS = "SETTINGS output_format_csv_crlf_end_of_line = 1"
# One reading thread and small blocks: FINAL merges one stream per part, each holding a block of every column,
# so memory follows max_block_size x parts (x threads); with 2 threads the export used 3-4x the memory for
# no gain on 2 cores (measured: bench/csv_bench.py).
_COPY_SETTINGS = _SETTINGS + ", do_not_merge_across_partitions_select_final = 1, max_threads = 1, max_block_size = 8192"


# `excel=1`: what a spreadsheet opened by a double click reads right (in locales whose list separator is ';',
# such as French): a UTF-8 byte-order mark, ';' between cells, and dates as 2026-11-20 11:00:00.000 (in
# `tz`, without the offset, which stops a spreadsheet recognising a date).
EXCEL_BOM = b"\xef\xbb\xbf"
DATE_COLUMNS = ("date", "entered_at", "waiting_until", "last_change")


def _excel(raw: str) -> bool:
    if raw.strip().lower() in ("", "0", "false", "no"):
        return False
    if raw.strip().lower() in ("1", "true", "yes"):
        return True
    raise QueryError(f"excel must be 1 or 0; got {raw!r}")


def spreadsheet_date(iso_sql: str) -> str:
    """The ISO 8601 date of a cell (2026-11-20T11:00:00.000+01:00) as a spreadsheet reads one."""
    return rf"replaceRegexpOne({iso_sql}, '^([0-9-]+)T([0-9:.]+)[+-][0-9:]+$', '\\1 \\2')"


def guard(sql: str) -> str:
    """SQL of a cell with the anti-formula prefix (the same rule as `escape_cell`)."""
    return rf"replaceRegexpOne({sql}, '^[=+\\-@\\t\\r]', '\'\\0')"


def escape_cell(value: str) -> str:
    """What a page value becomes in the CSV."""
    return "'" + value if value.startswith(FORMULA_STARTS) else value


def dump_filename(view: str, account_id: str, params: Mapping[str, str]) -> str:
    """What a download is saved as: the view and its date range in the dump's zone (one day: that day)."""
    from query.views import _iso

    q = parse(view, account_id, {k: v for k, v in params.items() if k != "excel"}, paging=False)
    bounded = SPECS[view].default_range  # contacts: only the bounds given
    lo = _iso(q.start, q.tz)[:10] if q.start is not None and (bounded or "from" in params) else None
    hi = _iso(q.end, q.tz)[:10] if q.end is not None and (bounded or "to" in params) else None
    if lo and hi:
        return f"{view}-{lo}.csv" if lo == hi else f"{view}-{lo}_{hi}.csv"
    return f"{view}-from-{lo}.csv" if lo else f"{view}-until-{hi}.csv" if hi else f"{view}.csv"


def csv_chunks(ch, view: str, account_id: str, params: Mapping[str, str], *, stream: bool = False,
               chunk_rows: int | None = None) -> Iterator[bytes]:
    """The header, then whole CSV records, one chunk per query. Parameters are checked at the first next().

    `stream`: each chunk's CSV comes as the engine formats it, in pieces of up to STREAM_READ bytes split
    anywhere (not on record ends), so memory does not grow with `chunk_rows` — for a reader that writes the
    pieces away at once (export_csv): the engine is held until the chunk is read to its end."""
    params = dict(params)
    excel = _excel(params.pop("excel", ""))
    q = parse(view, account_id, params, paging=False)  # a limit or a cursor is refused: a dump is every row
    columns = q.columns(dump=True)
    header = io.StringIO()
    csv.writer(header, lineterminator="\r\n", delimiter=";" if excel else ",").writerow([name for name, _ in columns])
    yield (EXCEL_BOM if excel else b"") + header.getvalue().encode()
    if excel:
        columns = [(name, spreadsheet_date(sql) if name in DATE_COLUMNS else sql) for name, sql in columns]
    select = ", ".join(guard(sql) for _, sql in columns)
    copy = view in DUMP_TABLES
    if copy:
        q = replace(q, table=DUMP_TABLES[view])
    settings = (_COPY_SETTINGS if copy else _SETTINGS) + (", format_csv_delimiter = ';'" if excel else "")
    rows = chunk_rows or CHUNK_ROWS
    after = None
    while True:
        bounds = [_next_boundary(ch, q, after, rows)] if copy else _boundaries(ch, q, after, rows)
        bounds = [b for b in bounds if b is not None]
        final = len(bounds) < (1 if copy else CHUNKS_PER_SCAN)
        for last in bounds + ([None] if final else []):
            where, p = _between(q, after, last)
            sql = ch.sql(q.sql(select, where, settings))
            if stream:
                with ch.client.raw_stream(sql, parameters=p, fmt="CSV") as piece:
                    while data := piece.read(STREAM_READ):
                        yield data
            else:
                data = ch.client.raw_query(sql, parameters=p, fmt="CSV")
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
    return (f"SELECT {keys} FROM {{db}}.{q.table} WHERE {' AND '.join([q.where_sql(), *where])} "
            f"ORDER BY {q.order_by()} {tail}")


def _next_boundary(ch, q: Query, after: list | None, rows: int) -> list | None:
    """Sort key of the CHUNK_ROWS-th row after `after` (None: fewer rows are left), on a copy sorted like the
    dump: ClickHouse reads the key columns in order and stops there."""
    where, p = _between(q, after, None)
    found = ch.rows(_keys_sql(q, where, f"LIMIT 1 OFFSET {rows - 1}"), p)
    return list(found[0]) if found else None


def _boundaries(ch, q: Query, after: list | None, rows: int) -> list[list]:
    """Sort keys of every CHUNK_ROWS-th row after `after`, for up to CHUNKS_PER_SCAN chunks (keys only:
    memory in proportion to those rows, not to the range)."""
    where, p = _between(q, after, None)
    names = [f"_k{i}" for i in range(len(q.key_select()))]
    order = ", ".join(f"{n} DESC" for n in names)
    inner = _keys_sql(q, where, f"LIMIT {rows * CHUNKS_PER_SCAN}")
    return [list(r) for r in ch.rows(
        f"SELECT {', '.join(names)} FROM (SELECT {', '.join(names)}, row_number() OVER (ORDER BY {order}) AS _rn "
        f"FROM ({inner})) WHERE _rn % {rows} = 0 ORDER BY {order}", p)]


_NOT_MARKS = bytes(b for b in range(256) if b not in b'"\n')


def count_records(data: bytes, dated: bool = False) -> int:
    """CSV records in whole records: line ends outside quoted cells (a cell may hold a line break).

    `dated`: every record starts with a quoted date ("2026-..., years 1900 to 2299). Then a record starts
    exactly where a line end is followed by a quote and a 1 or a 2: inside a cell, a quote after a line break
    is either doubled ("") or the cell's end (followed by , or a line end). Two substring counts.
    """
    if dated:
        return (data.count(b'\n"1') + data.count(b'\n"2') + 1) if data else 0
    return _count_any(data)


def _count_any(data: bytes) -> int:
    """count_records for any CSV.

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


class RecordCounter:
    """count_records over a stream cut anywhere (an HTTP body read in pieces): a line end ends a record when
    an even number of quotes came before it (a doubled quote inside a cell toggles twice), and that parity
    is carried from one piece to the next."""

    def __init__(self) -> None:
        self.inside = False

    def feed(self, data: bytes) -> int:
        marks = data.translate(None, _NOT_MARKS)
        if b'"' not in marks:
            return 0 if self.inside else len(marks)
        *lines, rest = marks.split(b"\n")
        n, inside = 0, self.inside
        for line in lines:
            if line.count(b'"') & 1:
                inside = not inside
            if not inside:
                n += 1
        if rest.count(b'"') & 1:
            inside = not inside
        self.inside = inside
        return n


def export_csv(ch, view: str, account_id: str, params: Mapping[str, str], out: BinaryIO,
               progress: Callable[[int], None] | None = None) -> int:
    """Write the dump to `out`; returns the rows written. `progress` gets the rows as they are written.

    The chunks are queried in a thread and streamed (`csv_chunks(stream=True)`, EXPORT_CHUNK_ROWS rows a
    query): the engine formats while this thread writes and counts, at most PREFETCH pieces wait in between,
    so memory stays at a few pieces whatever the chunk and the range. Rows are counted on the fly when each
    record starts with its date (events, scenarios: `count_records(dated=True)`, which needs no whole
    records); otherwise chunk by chunk."""
    dated = SPECS[view].columns[0][0] == "date" if view in SPECS else False
    chunks = csv_chunks(ch, view, account_id, params, stream=dated, chunk_rows=EXPORT_CHUNK_ROWS if dated else None)
    out.write(next(chunks))  # the header; a bad parameter raises here, before any thread
    ready: queue.Queue = queue.Queue(maxsize=PREFETCH)
    stop = threading.Event()

    def produce() -> None:
        try:
            for chunk in chunks:
                while not stop.is_set():
                    try:
                        ready.put((chunk, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            ready.put((None, None))
        except BaseException as exc:  # raised again in the caller's thread
            ready.put((None, exc))

    producer = threading.Thread(target=produce, name="csv-export", daemon=True)
    producer.start()
    rows, tail = 0, b""
    try:
        while True:
            chunk, error = ready.get()
            if error is not None:
                raise error
            if chunk is None:
                if dated and tail:
                    rows += 1  # the last record (a record is counted at the line end before the next)
                    if progress:
                        progress(1)
                return rows
            out.write(chunk)
            if dated:  # record starts: b'\n"1' or b'\n"2', maybe split between two pieces
                both = tail + chunk
                n = both.count(b'\n"1') + both.count(b'\n"2')
                tail = both[-2:]
            else:
                n = count_records(chunk)
            rows += n
            if progress and n:
                progress(n)
    finally:
        stop.set()
        while producer.is_alive():  # let a pending put give up, and the query in flight end
            try:
                ready.get_nowait()
            except queue.Empty:
                pass
            producer.join(0.05)
        chunks.close()
