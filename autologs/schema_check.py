"""Schema checks: what the database holds agrees with the event models, the views and the DDL rules.

Pure functions returning human-readable problems (an empty list means all is well), used by the
tests and by `autologs migrate --plan`:

- `materialized_view_problems(ch)`: every materialized view writes TO a table whose columns it
  matches by name, type and order; none has an inner table (no TO) or was created with POPULATE.
- `model_problems(ch)`: every field of every event model is stored in `event_log` (its own column
  of a compatible type, or the `details` JSON), and `event_log` has no column nothing writes.
- `ddl_file_problems(ddl_dir)`: the DDL files follow the rules the migration runner relies on.
"""
from __future__ import annotations

import re
import types
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple, Union, get_args, get_origin, get_type_hints

from autologs.clickhouse import ClickHouse

# --- SQL tokens ------------------------------------------------------------------------------------


class Tok(NamedTuple):
    kind: str  # word | qid (quoted identifier) | db ({db}) | str | num | op
    value: str  # a qid without its quotes; a word as written
    depth: int  # parenthesis depth; both parens of a pair carry the outer depth
    pos: int

    @property
    def upper(self) -> str:
        return self.value.upper() if self.kind == "word" else ""

    @property
    def is_name(self) -> bool:
        return self.kind in ("word", "qid", "db")


_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
    |(?P<lcomment>--[^\n]*)
    |(?P<bcomment>/\*.*?\*/)
    |(?P<str>'(?:[^'\\]|\\.|'')*')
    |(?P<qid>`(?:[^`\\]|\\.|``)*`|"(?:[^"\\]|\\.|"")*")
    |(?P<db>\{db\})
    |(?P<num>\d+(?:\.\d*)?(?:[eE][+-]?\d+)?)
    |(?P<word>[A-Za-z_][A-Za-z0-9_$]*)
    |(?P<op>.)
    """,
    re.S | re.X,
)


def tokenize(sql: str) -> list[Tok]:
    """SQL tokens without whitespace and comments; strings and quoted names are single tokens."""
    out: list[Tok] = []
    depth = 0
    for m in _TOKEN.finditer(sql):
        kind = m.lastgroup
        if kind in ("ws", "lcomment", "bcomment"):
            continue
        text = m.group()
        if kind == "qid":
            text = text[1:-1]
        if kind == "op" and text == ")":
            depth = max(depth - 1, 0)
        out.append(Tok(kind, text, depth, m.start()))
        if kind == "op" and text == "(":
            depth += 1
    return out


def split_statements(sql: str) -> list[list[Tok]]:
    """Statements as token lists, split on `;` tokens (so never inside a string or a comment)."""
    statements: list[list[Tok]] = [[]]
    for tok in tokenize(sql):
        if tok.kind == "op" and tok.value == ";":
            statements.append([])
        else:
            statements[-1].append(tok)
    return [s for s in statements if s]


def _qualified_name(toks: list[Tok], i: int) -> tuple[list[str], int] | None:
    """`a` or `a.b` starting at toks[i]: (parts, index after it), or None when no name is there."""
    if i >= len(toks) or not toks[i].is_name:
        return None
    parts = [toks[i].value]
    i += 1
    while i + 1 < len(toks) and toks[i].kind == "op" and toks[i].value == "." and toks[i + 1].is_name:
        parts.append(toks[i + 1].value)
        i += 2
    return parts, i


def _words_at(toks: list[Tok], i: int, *words: str) -> bool:
    return all(i + k < len(toks) and toks[i + k].upper == w for k, w in enumerate(words))


# --- materialized views ----------------------------------------------------------------------------


def _columns(ch: ClickHouse, database: str, table: str) -> list[tuple[str, str]]:
    """(name, type) of a table's columns in their order; empty when the table does not exist."""
    return [
        (name, type_)
        for name, type_ in ch.rows(
            "SELECT name, type FROM system.columns WHERE database = {d:String} AND table = {t:String} "
            "ORDER BY position",
            parameters={"d": database, "t": table},
        )
    ]


class ViewHeader(NamedTuple):
    to: tuple[str | None, str] | None  # (database or None, table) of `TO db.table`; None = inner table
    populate: bool


def parse_view_header(create_query: str) -> ViewHeader:
    """The TO target and POPULATE of a `CREATE MATERIALIZED VIEW` (the part before its `AS SELECT`)."""
    return _view_header(tokenize(create_query))


def _view_header(toks: list[Tok]) -> ViewHeader:
    to: tuple[str | None, str] | None = None
    populate = False
    start = next((i + 1 for i, t in enumerate(toks) if t.upper == "VIEW" and t.depth == 0), 0)
    named = _qualified_name(toks, start + (3 if _words_at(toks, start, "IF", "NOT", "EXISTS") else 0))
    i = named[1] if named else start
    while i < len(toks):
        t = toks[i]
        if t.depth == 0 and t.upper == "AS":  # the SELECT starts: the header is over
            break
        if t.depth == 0 and t.upper == "POPULATE":
            populate = True
        if t.depth == 0 and t.upper == "TO" and not _words_at(toks, i + 1, "INNER"):
            target = _qualified_name(toks, i + 1)
            if target:
                parts, i = target
                to = (parts[-2] if len(parts) > 1 else None, parts[-1])
                continue
        i += 1
    return ViewHeader(to, populate)


def materialized_view_problems(ch: ClickHouse) -> list[str]:
    """Problems of the materialized views of `ch.database`; see the module doc."""
    db = ch.database
    problems: list[str] = []
    views = ch.rows(
        "SELECT name, create_table_query, as_select FROM system.tables "
        "WHERE database = {d:String} AND engine = 'MaterializedView' ORDER BY name",
        parameters={"d": db},
    )
    for name, create_query, as_select in views:
        mv = f"mv {db}.{name}"
        header = parse_view_header(create_query)
        if header.populate:
            problems.append(f"{mv}: created with POPULATE (rows inserted while it populates are lost); "
                            "create it empty and backfill with INSERT ... SELECT")
        view_cols = _columns(ch, db, name)
        if as_select:
            try:
                yielded = [(r[0], r[1]) for r in ch.rows(f"DESCRIBE TABLE ({as_select})")]
            except Exception as exc:  # a source table dropped, a function removed, ...
                problems.append(f"{mv}: its SELECT cannot be analysed: {str(exc).splitlines()[0][:200]}")
            else:
                declared = dict(view_cols)
                for col, type_ in yielded:
                    if col in declared and declared[col] != type_:
                        problems.append(f"{mv}: its SELECT yields column {col} as {type_} but the view "
                                        f"declares {declared[col]}")
        if header.to is None:
            problems.append(f"{mv}: has no TO table (it writes into a hidden inner table that is dropped "
                            "with the view); create it with TO {db}.<table>")
            continue
        target_db = header.to[0] or db
        target = f"{target_db}.{header.to[1]}"
        target_cols = _columns(ch, target_db, header.to[1])
        if not target_cols:
            problems.append(f"{mv}: its TO table {target} does not exist")
            continue
        target_types = dict(target_cols)
        for col, type_ in view_cols:
            if col not in target_types:
                problems.append(f"{mv}: column {col} is not a column of its target {target}")
            elif target_types[col] != type_:
                problems.append(f"{mv}: column {col} is {type_} but target {target} has {target_types[col]}")
        shared = [c for c, _ in view_cols if c in target_types]
        in_target_order = [c for c, _ in target_cols if c in set(shared)]
        if shared != in_target_order:
            problems.append(f"{mv}: columns in the order ({', '.join(shared)}) but target {target} has them "
                            f"in the order ({', '.join(in_target_order)})")
    return problems


# --- event models against event_log ----------------------------------------------------------------


def _leaves(annotation: Any) -> list[tuple[Any, list]]:
    """The Python types a field annotation admits (None left out), each with its constraints."""
    origin = get_origin(annotation)
    if origin is Annotated:
        base, *meta = get_args(annotation)
        return [(t, m + meta) for t, m in _leaves(base)]
    if origin in (Union, types.UnionType):
        return [leaf for a in get_args(annotation) if a is not type(None) for leaf in _leaves(a)]
    if origin is Literal:
        return [(t, []) for t in dict.fromkeys(type(v) for v in get_args(annotation))]
    if origin is not None:  # dict[str, Any], list[int], ...
        return [(origin, [])]
    return [(annotation, [])]


def _lower_bound(meta: list) -> float | None:
    bound = None
    for item in meta:
        for sub in getattr(item, "metadata", None) or [item]:  # Field(ge=0) holds annotated_types.Ge
            for attr, shift in (("ge", 0), ("gt", 1)):
                v = getattr(sub, attr, None)
                if isinstance(v, (int, float)):
                    bound = v + shift if bound is None else max(bound, v + shift)
    return bound


def _bare_type(ch_type: str) -> str:
    """`LowCardinality(Nullable(String))` -> `String`."""
    t = ch_type.strip()
    while (m := re.fullmatch(r"(?:LowCardinality|Nullable)\((.*)\)", t)):
        t = m.group(1).strip()
    return t


def type_mismatch(py_type: Any, meta: list, ch_type: str) -> str | None:
    """Why a value of `py_type` does not fit a column of `ch_type`, or None when it does."""
    bare = _bare_type(ch_type)
    if py_type is bool:
        return None if bare in ("Bool", "UInt8") else "a bool needs Bool"
    if py_type is int:
        m = re.fullmatch(r"(U?)Int(8|16|32|64|128|256)", bare)
        if not m:
            return "an int needs an (U)Int* column"
        low = _lower_bound(meta)
        if m.group(1) and (low is None or low < 0):
            return "the field may be negative but the column is unsigned"
        return None
    if py_type is str:
        return None if bare == "String" else "a str needs String or LowCardinality(String)"
    if py_type is datetime:
        return None if re.sub(r"\s+", "", ch_type) == "DateTime64(3,'UTC')" else "a datetime needs DateTime64(3, 'UTC')"
    if py_type is dict:
        return None if bare == "String" else "a dict is stored as JSON text in a String column"
    if py_type is float:
        return None if bare in ("Float32", "Float64") else "a float needs Float32 or Float64"
    return f"no rule maps {getattr(py_type, '__name__', py_type)} to a ClickHouse type"


def model_problems(ch: ClickHouse, table: str = "event_log") -> list[str]:
    """Problems between `schemas.events.EVENT_MODELS` / `schemas.rows` and the `event_log` table."""
    from schemas.events import EVENT_MODELS
    from schemas.rows import DIRECT_FIELDS, EVENT_LOG_COLUMNS

    cols = dict(_columns(ch, ch.database, table))
    if not cols:
        return [f"{ch.database}.{table} does not exist"]
    direct = {f: c for f, c, _ in DIRECT_FIELDS}
    # A problem usually concerns many event types: one line per problem, naming the types.
    found: dict[str, list[str]] = {}

    def add(problem: str, event_type: str) -> None:
        found.setdefault(problem, [])
        if event_type not in found[problem]:
            found[problem].append(event_type)

    for event_type, model in EVENT_MODELS.items():
        for field, annotation in get_type_hints(model, include_extras=True).items():
            if field in direct or field == "properties":
                column = direct.get(field, "properties")
                if column not in cols:
                    add(f"field {field}: its column {column} is missing from {table}", event_type)
                    continue
                for py_type, meta in _leaves(annotation):
                    why = type_mismatch(py_type, meta, cols[column])
                    if why:
                        add(f"field {field} ({getattr(py_type, '__name__', py_type)}) -> column {column} "
                            f"({cols[column]}): {why}", event_type)
            elif "details" not in cols:
                add(f"field {field} is kept in the details JSON column, but {table} has no details column",
                    event_type)
    problems = [f"{p} (event types: {', '.join(ts)})" for p, ts in found.items()]
    for column in EVENT_LOG_COLUMNS:
        if column not in cols:
            problems.append(f"{table} has no column {column}, which schemas.rows.event_log_row writes")
    for column in ("source_name", "properties", "details"):
        if column in cols and _bare_type(cols[column]) != "String":
            problems.append(f"{table}.{column} is {cols[column]} but schemas.rows writes text (String)")
    allowed = set(direct.values()) | {"source_name", "properties", "details", "ingested_at"}
    for column in cols:
        if column not in allowed and not column.startswith("src_"):
            problems.append(f"{table}.{column} is an unmapped column: no event field is written to it")
    return problems


# --- DDL files -------------------------------------------------------------------------------------

_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_CREATE_KIND_WORDS = {"TABLE", "VIEW", "MATERIALIZED", "LIVE", "WINDOW", "DICTIONARY", "DATABASE", "FUNCTION",
                      "INDEX", "NAMED", "COLLECTION", "USER", "ROLE", "QUOTA", "ROW", "POLICY", "SETTINGS",
                      "PROFILE"}
# Words after which a name is a table (a name followed by `(` is a table function, not a table).
_TABLE_REF_WORDS = {"FROM", "JOIN", "INTO", "TABLE", "VIEW", "DICTIONARY"}
# Words before `(` that open a subquery or a list, not a function call (whose FROM is no table).
_NOT_FUNCTION = {"AS", "IN", "EXISTS", "FROM", "JOIN", "ANY", "ALL", "SOME", "UNION", "SELECT", "WHERE", "AND",
                 "OR", "NOT", "ON", "USING", "THEN", "ELSE", "WHEN", "HAVING", "BY", "VALUES", "TABLE", "WITH",
                 "EXCEPT", "INTERSECT", "DISTINCT", "PREWHERE", "QUALIFY"}
_ORDER_END = {"PRIMARY", "SAMPLE", "SETTINGS", "TTL", "PARTITION", "COMMENT", "AS", "EMPTY", "ORDER"}


def _runner_statements(path: Path) -> list[str]:
    from autologs.migrate import Migration

    return Migration(0, path.stem, path).statements()


def _in_function_call(toks: list[Tok], i: int) -> bool:
    """True when toks[i] sits directly inside `f( ... )` (e.g. the FROM of extract(DAY FROM d))."""
    depth = toks[i].depth
    if depth == 0:
        return False
    for j in range(i - 1, -1, -1):
        if toks[j].kind == "op" and toks[j].value == "(" and toks[j].depth == depth - 1:
            prev = toks[j - 1] if j > 0 else None
            return bool(prev and prev.kind in ("word", "qid") and prev.upper not in _NOT_FUNCTION)
    return False


def _cte_names(toks: list[Tok]) -> set[str]:
    return {toks[i].value for i in range(len(toks) - 2)
            if toks[i].is_name and toks[i + 1].upper == "AS" and toks[i + 2].value == "("}


def _table_refs(toks: list[Tok]) -> list[tuple[list[str], int]]:
    """Names used as tables in a statement, with their token index."""
    refs: list[tuple[list[str], int]] = []
    ctes = _cte_names(toks)
    is_view = _words_at(toks, 0, "CREATE", "MATERIALIZED", "VIEW") or _words_at(toks, 0, "RENAME")
    for i, t in enumerate(toks):
        word = t.upper
        if word == "TO" and not is_view:
            continue
        if word not in _TABLE_REF_WORDS and word != "TO":
            continue
        if word == "JOIN" and i > 0 and toks[i - 1].upper == "ARRAY":
            continue
        if word == "FROM" and _in_function_call(toks, i):
            continue
        j = i + 1
        for skip in (("IF", "NOT", "EXISTS"), ("IF", "EXISTS")):
            if _words_at(toks, j, *skip):
                j += len(skip)
                break
        if j < len(toks) and toks[j].upper in ("INNER", "DISK", "VOLUME", "FUNCTION", "OUTFILE"):
            continue
        named = _qualified_name(toks, j)
        if not named:
            continue
        parts, after = named
        if after < len(toks) and toks[after].value == "(" and word in ("FROM", "JOIN"):
            continue  # a table function: numbers(10), file(...)
        if len(parts) == 1 and parts[0] in ctes:
            continue
        refs.append((parts, j))
    return refs


def _create_problems(toks: list[Tok], where: str) -> list[str]:
    problems: list[str] = []
    i = 1
    replace = _words_at(toks, i, "OR", "REPLACE")
    i += 2 if replace else 0
    if _words_at(toks, i, "TEMPORARY"):
        i += 1
    kind_words = []
    while i < len(toks) and toks[i].upper in _CREATE_KIND_WORDS:
        kind_words.append(toks[i].upper)
        i += 1
    kind = " ".join(kind_words) or "?"
    if_not_exists = _words_at(toks, i, "IF", "NOT", "EXISTS")
    named = _qualified_name(toks, i + 3 if if_not_exists else i)
    name = ".".join(named[0]) if named else "?"
    what = f"{where} (CREATE {kind} {name})"
    if not if_not_exists:
        problems.append(f"{what}: no IF NOT EXISTS{' (OR REPLACE drops what exists)' if replace else ''}; "
                        "a migration that died half-way could not simply be applied again")
    if kind == "MATERIALIZED VIEW":
        if _view_header(toks).to is None:
            problems.append(f"{what}: a materialized view without TO writes into a hidden inner table; "
                            "give it TO {db}.<table>")
    if kind == "TABLE":
        engine_at = next((k for k, t in enumerate(toks) if t.depth == 0 and t.upper == "ENGINE"), None)
        if engine_at is not None:
            k = engine_at + 1
            if k < len(toks) and toks[k].value == "=":
                k += 1
            engine = toks[k].value if k < len(toks) else ""
            if engine.endswith("MergeTree"):
                order_at = next((m for m in range(k, len(toks) - 1) if toks[m].depth == 0
                                 and toks[m].upper == "ORDER" and toks[m + 1].upper == "BY"), None)
                if order_at is None:
                    problems.append(f"{what}: {engine} without ORDER BY; the key must start with account_id")
                else:
                    first = _first_key_element(toks, order_at + 2)
                    if [(t.kind, t.value) for t in first] not in ([("word", "account_id")], [("qid", "account_id")]):
                        shown = " ".join(t.value for t in first) or "nothing"
                        problems.append(f"{what}: ORDER BY starts with {shown}, not account_id (the tenant "
                                        "comes first in every key)")
    return problems


def _first_key_element(toks: list[Tok], i: int) -> list[Tok]:
    """The first element of `ORDER BY (a, b)` or `ORDER BY a`: its tokens."""
    if i < len(toks) and toks[i].value == "(":
        depth = toks[i].depth + 1
        out = []
        for t in toks[i + 1:]:
            if t.depth == depth and t.kind == "op" and t.value == ",":
                break
            if t.depth == depth - 1 and t.value == ")":
                break
            out.append(t)
        return out
    out = []
    for t in toks[i:]:
        if t.depth == toks[i].depth and (t.upper in _ORDER_END or (t.kind == "op" and t.value == ",")):
            break
        out.append(t)
    return out


_ALTER_ADD = {"COLUMN", "INDEX", "PROJECTION", "CONSTRAINT", "STATISTICS"}


def _statement_problems(toks: list[Tok], where: str) -> list[str]:
    problems: list[str] = []
    first = toks[0].upper
    if first == "CREATE":
        problems += _create_problems(toks, where)
    elif first == "DROP" and not _words_at(toks, 2, "IF", "EXISTS") and not _words_at(toks, 3, "IF", "EXISTS"):
        problems.append(f"{where} (DROP): no IF EXISTS; a migration that died half-way could not be applied again")
    elif first == "ALTER":
        for i, t in enumerate(toks[:-1]):
            nxt = toks[i + 1].upper
            if t.upper == "ADD" and nxt in _ALTER_ADD and not _words_at(toks, i + 2, "IF", "NOT", "EXISTS"):
                problems.append(f"{where} (ALTER ... ADD {nxt}): no IF NOT EXISTS")
            if t.upper in ("DROP", "RENAME") and nxt in _ALTER_ADD and not _words_at(toks, i + 2, "IF", "EXISTS"):
                problems.append(f"{where} (ALTER ... {t.upper} {nxt}): no IF EXISTS")
    if any(t.upper == "POPULATE" for t in toks):
        problems.append(f"{where}: uses POPULATE (rows inserted while it populates are lost); "
                        "backfill with INSERT ... SELECT instead")
    for parts, _ in _table_refs(toks):
        if parts[0] == "{db}" and len(parts) == 2:
            continue
        if len(parts) == 2 and parts[0] in ("system", "INFORMATION_SCHEMA", "information_schema"):
            continue
        shown = ".".join(parts)
        problems.append(f"{where}: refers to table {shown}; write {{db}}.{parts[-1]} (the database is "
                        "chosen at run time)")
    return problems


def ddl_file_problems(ddl_dir: Path) -> list[str]:
    """Problems of the DDL files in `ddl_dir`; see the module doc."""
    problems: list[str] = []
    numbers: dict[str, list[str]] = {}
    files = sorted(Path(ddl_dir).glob("*.sql"))
    if not files:
        problems.append(f"{ddl_dir}: no DDL file")
    for path in files:
        m = _FILE_NAME.match(path.name)
        if not m:
            problems.append(f"{path.name}: DDL files are named NNNN_name.sql (4 digits, lower-case name)")
        else:
            numbers.setdefault(m.group(1), []).append(path.name)
        text = path.read_text()
        statements = split_statements(text)
        if not statements:
            problems.append(f"{path.name}: holds no statement")
        runner = _runner_statements(path)
        if len(runner) != len(statements):
            problems.append(f"{path.name}: the migration runner splits it into {len(runner)} statement(s) but "
                            f"it holds {len(statements)}: a ';' at a line end inside a string, or a comment "
                            "after a ';' on the same line?")
        for n, toks in enumerate(statements, 1):
            problems += _statement_problems(toks, f"{path.name} statement {n}")
    for number, names in numbers.items():
        if len(names) > 1:
            problems.append(f"DDL files share the number {number}: {', '.join(names)}")
    return problems
