"""The read layer: event log, scenario log and contacts in scenarios of one account, as pages and details.

- Safety: the SQL text is built only from the fixed fragments of this module. `account_id` and every
  user value travel as server-side parameters (`{name:Type}`), so a value can neither change the query
  nor reach another account.
- Same values everywhere: what a row shows (dates in `tz`, messages in `lang`, "internal request") is
  computed in SQL, so a page and a CSV dump (query/csv_export.py) agree and the dump needs no Python work.
- Keyset pagination on each view's sort key (newest first): a row is shown once across pages even while
  rows keep arriving; the cursor also pins the date range of the first page (the default range ends "now").
- Every read uses FINAL (ReplacingMergeTree) but the contacts page as it opens, which reads the copy sorted
  by entry with LIMIT 1 BY (`Query._latest_by_entry_sql`). A condition on non-key columns (status) stays in
  WHERE, so it sees only the latest version of a row; a condition on sorting-key columns only (account,
  email, date range, cursor) is a PREWHERE: every copy of a row has the same key, so filtering the copies
  before they merge gives the same rows, and the other columns are read only for the rows that pass
  (`SORTING_KEYS`).
"""
from __future__ import annotations

import base64
import difflib
import hashlib
import json
import logging
import unicodedata
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from functools import lru_cache
from typing import Any, Callable, Mapping, NamedTuple
from zoneinfo import ZoneInfo, available_timezones

import orjson

from processors.scenarios import ATTRIBUTIONS
from schemas.events import EVENT_TYPES, INTERNAL_REQUEST, IP_UNKNOWN_TYPES, canonical_ip, normalize_email
from schemas.messages import ATTRIBUTION_LABELS, ENROLLMENT_STATUSES, LANGUAGES, WORKFLOW_POINTS, render, sql_render_expression

VIEWS = ("events", "scenarios", "contacts")
MAX_PAGE = 1000
DEFAULT_PAGE = 50
DEFAULT_DAYS = 7
COMMON = ("from", "to", "tz", "lang", "limit", "cursor")
STATUSES = ("active", "waiting", "exited", "removed")
MAX_VALUE = 1000  # characters of one filter value
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
log = logging.getLogger("autologs.query")


class QueryError(ValueError):
    """A bad parameter (an HTTP 400): the message names it and says how to fix it."""


def lit(text: str) -> str:
    """A SQL string literal of one of *our* constants (user values are never formatted into SQL)."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


_UNKNOWN_IP = f"event_type IN ({', '.join(lit(t) for t in IP_UNKNOWN_TYPES)})"


def shown_ip(lang: str) -> str:
    """The ip column as shown: the address, "internal request" when the platform triggered the event, or
    empty when the contact's address is unknown (schemas.events.IP_UNKNOWN_TYPES)."""
    return f"if(ip != '', ip, if({_UNKNOWN_IP}, '', {lit(INTERNAL_REQUEST[lang])}))"


def _date(col: str) -> str:
    """ISO 8601 in the asked time zone, milliseconds and offset: 2026-11-20T11:00:00.000+01:00."""
    local, off = f"toTimeZone({col}, {{tz:String}})", f"timeZoneOffset(toTimeZone({col}, {{tz:String}}))"
    return (f"concat(replaceOne(toString({local}), ' ', 'T'), if({off} < 0, '-', '+'), "
            f"leftPad(toString(intDiv(abs({off}), 3600)), 2, '0'), ':', "
            f"leftPad(toString(intDiv(abs({off}) % 3600, 60)), 2, '0'))")


def _uint(col: str) -> str:
    return f"if({col} = 0, '', toString({col}))"  # 0 means "none" in these columns


def _translated(col: str, table: dict[str, dict[str, str]]) -> Callable[[str], str]:
    keys = sorted(table)
    return lambda lang: (f"transform(toString({col}), [{', '.join(map(lit, keys))}], "
                         f"[{', '.join(lit(table[k][lang]) for k in keys)}])")


# ---- filters: (name, raw value) -> (SQL condition, {parameter: value}) ----------------------------------

def _text(name: str, raw: str) -> str:
    if len(raw) > MAX_VALUE:
        raise QueryError(f"{name}: at most {MAX_VALUE} characters")
    return raw


def _uint64(name: str, raw: str) -> int:
    if not raw.isascii() or not raw.isdigit() or int(raw) >= 2 ** 64:
        raise QueryError(f"{name} must be a whole number, got {raw!r}")
    return int(raw)


def _choice(*allowed: str) -> Callable[[str, str], str]:
    def parse(name: str, raw: str) -> str:
        if raw not in allowed:
            raise QueryError(f"{name} must be one of {', '.join(allowed)}; got {raw!r}")
        return raw
    return parse


def _reads(*columns: str):
    """Mark a filter builder with the columns its condition reads (what decides PREWHERE or WHERE)."""
    def mark(build):
        build.columns = columns
        return build
    return mark


def _eq(column: str, parse=_text, ptype: str = "String"):
    @_reads(column)
    def build(name: str, raw: str):
        return f"{column} = {{f_{name}:{ptype}}}", {f"f_{name}": parse(name, raw)}
    return build


def _one_of(column: str, *allowed: str):
    """One value, or several separated by commas (`templates_opened,templates_clicked`, `s1,s2`): one of
    `allowed` each, or, without `allowed`, free-text ids as given."""
    pick = _choice(*allowed) if allowed else _text
    what = f"one or more of {', '.join(allowed)}" if allowed else "one or more ids"

    @_reads(column)
    def build(name: str, raw: str):
        wanted = sorted({pick(name, v.strip()) for v in raw.split(",") if v.strip()})
        if not wanted:
            raise QueryError(f"{name} must be {what}, separated by commas")
        return f"{column} IN {{f_{name}:Array(String)}}", {f"f_{name}": wanted}
    return build


def _email(column: str):
    return _eq(column, lambda name, raw: _stored_email(_text(name, raw)))


def _stored_email(raw: str) -> str:
    """As events store it: lower-cased, an international domain in Unicode (schemas.events.normalize_email).
    Only valid addresses are stored, so anything else is refused rather than answered with an empty page."""
    try:
        return normalize_email(raw) or raw
    except ValueError:
        raise QueryError(f"email: {raw[:80]!r} is not an email address; the filter takes a whole address, "
                         "e.g. ann@example.com") from None


def _without_accents(text: str) -> str:
    """As the name filter compares names: without accents, and with a typographic apostrophe as a plain one."""
    return "".join(c for c in unicodedata.normalize("NFD", text)
                   if not unicodedata.category(c).startswith("M")).replace("\u2019", "'")


def _contains(column: str):
    """Case and accents ignored: a marketer typing `ete` finds "Soldes d'été"."""
    @_reads(column)
    def build(name: str, raw: str):
        folded = f"replaceAll(replaceRegexpAll(normalizeUTF8NFD({column}), '\\\\pM', ''), '\u2019', '\\'')"
        return (f"positionCaseInsensitiveUTF8({folded}, {{f_{name}:String}}) > 0",
                {f"f_{name}": _without_accents(_text(name, raw))})
    return build


@_reads("ip", "event_type")
def _ip(name: str, raw: str):
    if raw.lower() in ("internal", *INTERNAL_REQUEST.values()):  # as the pages show it, in either language
        return f"ip = '' AND NOT {_UNKNOWN_IP}", {}
    text = _text(name, raw)
    try:
        text = canonical_ip(text) or text  # ::ffff:192.0.2.7 finds 192.0.2.7, as the event log stores it
    except ValueError:
        raise QueryError(f"ip: {text[:80]!r} is not an IP address; give one (e.g. 192.0.2.7 or 2001:db8::7), or "
                         "'internal' for events triggered internally") from None
    return "ip = {f_ip:String}", {"f_ip": text}


@_reads("status")
def _status(name: str, raw: str):
    if raw == "all":
        return "", {}
    try:
        wanted = sorted({_choice(*STATUSES)(name, s.strip()) for s in raw.split(",") if s.strip()})
    except QueryError:
        wanted = []
    if not wanted:
        raise QueryError(f"status must be 'all' or one or more of {', '.join(STATUSES)} separated by commas; "
                         f"got {raw[:80]!r}")
    return "status IN {f_status:Array(String)}", {"f_status": wanted}


@dataclass(frozen=True)
class View:
    table: str
    time: str                    # first sort key, and the column the date range applies to
    keys: tuple[str, ...]        # the rest of the sort key (String columns), also newest first
    id: str                      # SQL of the row id given to `detail`
    columns: tuple[tuple[str, str | Callable[[str], str]], ...]  # (name, SQL or lang -> SQL)
    filters: dict[str, Callable]
    defaults: tuple[tuple[str, str], ...] = ()
    default_range: bool = True   # contacts: the date range applies only when asked
    by_time: str = ""            # a copy sorted by (account_id, time, keys): what reads without an email use
    by_email: str = ""           # a copy sorted by (account_id, email, time, keys): what reads with an email use
    # contacts: a copy sorted by (account_id, time, keys) whose every version is read without FINAL, the
    # highest version of each key first (LIMIT 1 BY): what pages without a contact or a scenario use
    by_entry: str = ""
    # contacts: a sorting-key column equal to the email wherever the email is set (contact_key: a contact's
    # state is keyed by its email when its events carry one, and only those events set the email), so an
    # email filter also narrows the key: at 1M enrollments, a page of one contact 33.5 -> 16.7 ms p50
    email_key: str = ""
    settings: tuple[tuple[str, Any], ...] = ()  # ClickHouse settings of its page queries
    # Columns a CSV dump adds after the page's: what an analyst joins or filters on, read from the tables
    # dumps read (the page may read a copy without them)
    dump_columns: tuple[tuple[str, str], ...] = ()


SPECS: dict[str, View] = {
    "events": View(
        "event_log", "occurred_at", ("event_id",), "event_id",
        (("date", _date("occurred_at")), ("type", "toString(event_type)"), ("name", "source_name"),
         ("email", "email"), ("contact_id", _uint("contact_id")),
         ("ip", shown_ip), ("event_name", "event_name"),
         ("url", "url"), ("message_id", "message_id"), ("template_id", _uint("template_id")),
         ("campaign_id", _uint("campaign_id")), ("scenario_id", "automation_id"), ("step_id", "step_id")),
        {"email": _email("email"), "contact_id": _eq("contact_id", _uint64, "UInt64"),
         "event_type": _one_of("event_type", *EVENT_TYPES), "event_name": _eq("event_name"),
         "name": _contains("source_name"), "ip": _ip, "message_id": _eq("message_id"),
         "template_id": _eq("template_id", _uint64, "UInt64"), "campaign_id": _eq("campaign_id", _uint64, "UInt64"),
         "scenario": _eq("automation_id")},
        by_time="event_log_by_time", dump_columns=(("event_id", "event_id"),)),
    "scenarios": View(
        "scenario_log", "occurred_at", ("scenario_id", "source_event_id"), "concat(scenario_id, '|', source_event_id)",
        (("date", _date("occurred_at")), ("user_email", "email"), ("contact_id", _uint("contact_id")),
         ("scenario_name", "scenario_name"),
         ("scenario_id", "scenario_id"), ("step_id", "step_id"), ("start_id", "start_id"),
         ("workflow_points", _translated("workflow_point", WORKFLOW_POINTS)), ("type", "toString(type)"),
         ("message", lambda lang: sql_render_expression("message_code", "message_params", lang, "tz")),
         ("attribution", _translated("attribution", ATTRIBUTION_LABELS))),
        {"email": _email("email"), "contact_id": _eq("contact_id", _uint64, "UInt64"), "scenario": _eq("scenario_id"),
         "step": _one_of("step_id"), "type": _one_of("type", *EVENT_TYPES),
         "workflow_point": _one_of("workflow_point", *WORKFLOW_POINTS),
         "attribution": _one_of("attribution", *ATTRIBUTIONS)},
        # The email and step filters use skip indexes under FINAL. Exact mode would also read every granule
        # sharing sorting-key values with a selected one, in case a newer copy of a row no longer matches;
        # here every copy of a row is derived from the same event and carries the same email and step, so
        # it matches too. Measured on 10M rows, email + a month: 420 -> 166 ms.
        settings=(("use_skip_indexes_if_final_exact_mode", 0),),
        by_email="scenario_log_by_contact"),
    "contacts": View(
        "enrollment_state", "entered_at", ("scenario_id", "contact_key"), "concat(scenario_id, '|', contact_key)",
        (("email", "email"), ("contact_id", _uint("contact_id")), ("scenario_name", "scenario_name"),
         ("scenario_id", "scenario_id"), ("step", "step_id"),
         ("status", _translated("status", ENROLLMENT_STATUSES)),
         ("entered_at", _date("entered_at"))),
        {"email": _email("email"), "contact_id": _eq("contact_id", _uint64, "UInt64"), "scenario": _eq("scenario_id"),
         "step": _one_of("step_id"), "status": _status},
        defaults=(("status", "active,waiting"),), default_range=False,
        by_entry="enrollment_state_by_entry", email_key="contact_key",
        dump_columns=(("waiting_until", f"if(isNull(wait_until), '', {_date('assumeNotNull(wait_until)')})"),
                      ("last_change", _date("updated_at")))),
}
FILTERS: dict[str, tuple[str, ...]] = {view: tuple(spec.filters) for view, spec in SPECS.items()}
COLUMNS: dict[str, tuple[str, ...]] = {view: ("id", *(c for c, _ in spec.columns)) for view, spec in SPECS.items()}

# The sorting key of each table the views read (clickhouse/ddl; tests/test_ddl.py holds them equal).
SORTING_KEYS: dict[str, frozenset[str]] = {
    "event_log": frozenset(("account_id", "email", "occurred_at", "event_id")),
    "event_log_by_time": frozenset(("account_id", "occurred_at", "event_id")),
    "scenario_log": frozenset(("account_id", "scenario_id", "occurred_at", "source_event_id")),
    "scenario_log_by_contact": frozenset(("account_id", "email", "occurred_at", "scenario_id", "source_event_id")),
    "enrollment_state": frozenset(("account_id", "scenario_id", "contact_key")),
    "enrollment_state_by_entry": frozenset(("account_id", "entered_at", "scenario_id", "contact_key")),
}


class Cond(NamedTuple):
    sql: str
    columns: tuple[str, ...]  # the columns it reads


# ---- parsing the query string --------------------------------------------------------------------------

@lru_cache(maxsize=1)
def _zones() -> frozenset[str]:
    return frozenset(available_timezones())


def _zone(raw: str) -> ZoneInfo:
    if raw not in _zones():
        raise QueryError(f"tz: unknown time zone {raw!r}; use an IANA name such as UTC or Europe/Paris")
    return ZoneInfo(raw)


def _instant(name: str, raw: str, zone: ZoneInfo, end: bool) -> datetime:
    """A date means the whole day in `zone` (its first or last millisecond); a time without offset is in `zone`."""
    hint = f"{name}: {raw!r} is not an ISO 8601 date or time (e.g. 2026-11-20 or 2026-11-20T14:30:00+01:00)"
    try:
        try:
            day = date.fromisoformat(raw)
        except ValueError:  # not a plain date: a time
            t = datetime.fromisoformat(raw)
            t = t if t.tzinfo else t.replace(tzinfo=zone)
        else:
            t = datetime.combine(day + timedelta(days=1) if end else day, time(), zone)
            t -= timedelta(milliseconds=1) if end else timedelta(0)
    except (ValueError, OverflowError):
        raise QueryError(hint) from None
    if not 1970 <= t.year <= 2200:
        raise QueryError(f"{name}: {raw!r} is out of range (years 1970 to 2200)")
    return t


def _ms(t: datetime) -> int:
    return (t - EPOCH) // timedelta(milliseconds=1)


def _iso(ms: int | None, zone: ZoneInfo) -> str | None:
    if ms is None:
        return None
    return (EPOCH + timedelta(milliseconds=ms)).astimezone(zone).isoformat(timespec="milliseconds")


@dataclass
class Query:
    """One validated request: SQL conditions and their parameters, display options, position."""

    view: str
    spec: View
    where: list[Cond]
    params: dict[str, Any]
    tz: ZoneInfo
    lang: str
    limit: int
    start: int | None           # range bounds, ms since epoch, both inclusive (None: unbounded)
    end: int | None
    after: list | None          # sort key of the last row of the previous page
    digest: str                 # the view, account and filters the cursor is bound to
    table: str = ""             # where the rows are read: the view's table, or its time-ordered copy

    def columns(self, dump: bool = False) -> list[tuple[str, str]]:
        shown = [(name, sql(self.lang) if callable(sql) else sql) for name, sql in self.spec.columns]
        return shown + list(self.spec.dump_columns) if dump else shown

    def key_sql(self) -> list[str]:
        return [self.spec.time, *self.spec.keys]

    def order_by(self) -> str:
        return ", ".join(f"{c} DESC" for c in self.key_sql())

    def key_select(self) -> list[str]:
        return [f"toUnixTimestamp64Milli({self.spec.time})", *self.spec.keys]

    def keyset(self, key: list, prefix: str, inclusive: bool = False) -> tuple[str, dict]:
        """Condition: rows after the row with sort key `key` in newest-first order (from it on if inclusive)."""
        names = [f"{prefix}{i}" for i in range(len(key))]
        values = [f"fromUnixTimestamp64Milli({{{names[0]}:Int64}}, 'UTC')",
                  *(f"{{{n}:String}}" for n in names[1:])]
        op = ">=" if inclusive else "<"
        cond = f"({', '.join(self.key_sql())}) {op} ({', '.join(values)})"
        # implied by the tuple comparison, but lets ClickHouse prune parts and granules on the time column
        cond += f" AND {self.spec.time} {'>=' if inclusive else '<='} {values[0]}"
        return cond, dict(zip(names, key))

    def sql(self, select: str, extra: list[str] = (), tail: str = "") -> str:
        """`extra`: keyset conditions (on the sort key of the view, `key_sql`)."""
        key = SORTING_KEYS[self.table]
        conds = [*self.where, *(Cond(c, tuple(self.key_sql())) for c in extra)]
        if self.table == self.spec.by_entry:
            return self._latest_by_entry_sql(select, conds, tail)
        # PREWHERE pays when the key conditions pick a few rows out of each granule read (a contact, a
        # scenario); on a time slice of the account every row of the granules passes, and it cost more.
        # Measured at 10M rows, alternating: event-log page by email p50 17.4/19.7/18.9 -> 12.0/16.4/15.8 ms;
        # the account's last 7 days 48.8/48.3/46.2 -> 55.0/59.9/49.8 ms (so not there).
        narrow = any(key.issuperset(c.columns) and not {"account_id", self.spec.time}.issuperset(c.columns)
                     for c in self.where)
        pre = [c.sql for c in conds if narrow and key.issuperset(c.columns)]
        post = [c.sql for c in conds if not (narrow and key.issuperset(c.columns))]
        return (f"SELECT {select} FROM {{db}}.{self.table} FINAL {'PREWHERE ' + ' AND '.join(pre) if pre else ''} "
                f"WHERE {' AND '.join(post) if post else '1'} ORDER BY {self.order_by()} {tail}")

    def _latest_by_entry_sql(self, select: str, conds: list[Cond], tail: str) -> str:
        """The latest version of each key, newest entry first, from a copy holding every version unmerged.

        The inner query reads the account in its sorting key's order (newest first, no FINAL) and keeps the
        first row of each key, the highest version (LIMIT 1 BY); only then do the other conditions apply,
        the cursor and the date range included: a key's newer entry hides its older ones even when that
        entry is not shown. Without an outer ORDER BY the rows keep the inner order (LIMIT BY and the filter
        run on one sorted stream) and the read stops after the page's rows; an outer ORDER BY would make
        ClickHouse read and sort the whole account (measured 10 -> 165 ms). tests/test_query.py holds the
        pages equal to enrollment_state's, page after page.
        """
        inner = [c.sql for c in conds if {"account_id"}.issuperset(c.columns)]
        post = [c.sql for c in conds if not {"account_id"}.issuperset(c.columns)]
        keys = ", ".join(self.spec.keys)
        return (f"SELECT {select} FROM (SELECT * FROM {{db}}.{self.table} WHERE {' AND '.join(inner)} "
                f"ORDER BY {self.order_by()}, version DESC LIMIT 1 BY {keys}) "
                f"WHERE {' AND '.join(post) if post else '1'} {tail}")

    def settings(self) -> dict[str, Any]:
        """ClickHouse settings of the page query."""
        if self.table == self.spec.by_entry:
            # Small blocks and no read-ahead: the in-order read stops after the blocks the page needs
            # (1M enrollments, the largest account: 45 ms with 65k-row blocks -> 8 ms).
            return {**dict(self.spec.settings), "max_block_size": 1024, "read_in_order_use_buffering": 0}
        return dict(self.spec.settings)

    def where_sql(self) -> str:
        return " AND ".join(c.sql for c in self.where)


def _hash(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def encode_cursor(q: Query, key: list) -> str:
    body = [key, [q.start, q.end], _hash(q.digest, key, q.start, q.end)]
    return base64.urlsafe_b64encode(json.dumps(body, separators=(",", ":")).encode()).decode().rstrip("=")


def _decode_cursor(raw: str, q: Query) -> tuple[list, int | None, int | None]:
    bad = ("cursor: not a cursor of this view and these filters (it is next_cursor of a previous page, "
           "with the same filters); start again without it")
    try:
        key, (start, end), check = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except Exception:
        raise QueryError(bad) from None
    ok_key = (isinstance(key, list) and len(key) == 1 + len(q.spec.keys) and type(key[0]) is int
              and all(isinstance(k, str) for k in key[1:]))
    ok_range = all(v is None or type(v) is int for v in (start, end))
    if not (ok_key and ok_range and check == _hash(q.digest, key, start, end)):
        raise QueryError(bad)
    return key, start, end


UNBOUNDED_LO = datetime(1970, 1, 1, tzinfo=timezone.utc)
UNBOUNDED_HI = datetime(2200, 1, 1, tzinfo=timezone.utc)


def parse(view: str, account_id: str, params: Mapping[str, str], *, paging: bool = True,
          now: datetime | None = None) -> Query:
    """Validate the query string of one view; raises QueryError saying what to fix."""
    if view not in SPECS:
        raise QueryError(f"unknown view {view!r}; views: {', '.join(VIEWS)}")
    if not isinstance(account_id, str) or not account_id:
        raise QueryError("an account is required")
    spec = SPECS[view]
    values: dict[str, str] = {}
    for name, raw in params.items():
        if not isinstance(raw, str):
            raise QueryError(f"{name}: give one text value")
        if raw.strip():
            values[name] = raw.strip()
    if not paging and ({"limit", "cursor"} & set(values)):
        raise QueryError(f"{'limit' if 'limit' in values else 'cursor'}: a dump has every row of the range, not "
                         "a page; leave it out (narrow the rows with from, to and the filters)")
    unknown = sorted(set(values) - set(COMMON) - set(spec.filters))
    if unknown:
        close = difflib.get_close_matches(unknown[0], [*spec.filters, *COMMON], n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise QueryError(f"unknown filter {unknown[0]!r} for {view}; {hint}its filters are "
                         f"{', '.join(spec.filters)} (besides {', '.join(COMMON)})")
    zone = _zone(values.get("tz", "UTC"))
    lang = values.get("lang", "en")
    if lang not in LANGUAGES:
        raise QueryError(f"lang must be one of {', '.join(LANGUAGES)}; got {lang!r}")
    limit = DEFAULT_PAGE
    if paging and "limit" in values:
        raw = values["limit"]
        if not (raw.isascii() and raw.isdigit() and 1 <= int(raw) <= MAX_PAGE):
            raise QueryError(f"limit must be a whole number from 1 to {MAX_PAGE}; got {raw!r}")
        limit = int(raw)

    where = [Cond("account_id = {account:String}", ("account_id",))]
    bound: dict[str, Any] = {"account": account_id, "tz": zone.key}
    filters = dict(spec.defaults) | {k: v for k, v in values.items() if k in spec.filters}
    for name in sorted(filters):
        build = spec.filters[name]
        cond, p = build(name, filters[name])
        if cond:
            where.append(Cond(cond, build.columns))
            bound.update(p)
    if spec.email_key and "email" in filters:
        where.append(Cond(f"{spec.email_key} = {{f_email:String}}", (spec.email_key,)))

    start = end = None
    if spec.default_range or "from" in values or "to" in values:
        now = now or datetime.now(timezone.utc)
        # Contacts: only the bounds given (an entry may be of any age; one stamped ahead is still shown).
        open_hi, open_lo = (now, None) if spec.default_range else (UNBOUNDED_HI, UNBOUNDED_LO)
        hi = _instant("to", values["to"], zone, True) if "to" in values else open_hi
        lo = _instant("from", values["from"], zone, False) if "from" in values else (
            open_lo or hi - timedelta(days=DEFAULT_DAYS))
        start, end = _ms(lo), _ms(hi)
        if start > end:  # compared as instants: two times of one zone compare by their wall clocks in Python
            raise QueryError(f"from ({_iso(start, zone)}) is after to ({_iso(end, zone)}): give from <= to")
    digest = _hash(view, account_id, {k: v for k, v in values.items() if k in ("from", "to", "tz")}, filters)
    # event_log is sorted by contact first: a page without an email reads the account's newest rows from
    # the time-ordered copy instead (measured at 10M rows: 303 ms -> see README, Performance). scenario_log
    # is sorted by scenario: a page of one contact reads the copy sorted by email.
    # enrollment_state is sorted by scenario: the contacts page as it opens (an account's newest entries)
    # reads the copy sorted by entry, newest first, and stops after its rows. A page of one contact or
    # scenario, or ending at a `to`, would read the copy far down (from the newest entry on: measured 30 ->
    # 100 ms for a contact_id at 1M enrollments), so it reads enrollment_state; so do dumps (not paging).
    if "email" in filters:
        table = spec.by_email or spec.table
    elif paging and spec.by_entry and not ({"scenario", "contact_id"} & filters.keys() or "to" in values):
        table = spec.by_entry
    else:
        table = spec.by_time or spec.table
    q = Query(view, spec, where, bound, zone, lang, limit, start, end, None, digest, table)
    if paging and "cursor" in values:
        q.after, q.start, q.end = _decode_cursor(values["cursor"], q)
    if q.start is not None:
        where.append(Cond(f"{spec.time} >= fromUnixTimestamp64Milli({{t_from:Int64}}, 'UTC')", (spec.time,)))
        where.append(Cond(f"{spec.time} <= fromUnixTimestamp64Milli({{t_to:Int64}}, 'UTC')", (spec.time,)))
        bound.update(t_from=q.start, t_to=q.end)
    return q


# ---- reads ---------------------------------------------------------------------------------------------

def page(ch, view: str, account_id: str, params: Mapping[str, str]) -> dict:
    """One page, newest first; `next_cursor` is None on the last page. Every value is a string."""
    q = parse(view, account_id, params)
    cols = q.columns()
    select = ", ".join([f"{q.spec.id} AS _id", *(f"{sql} AS _c{i}" for i, (_, sql) in enumerate(cols)),
                        *(f"{sql} AS _k{i}" for i, sql in enumerate(q.key_select()))])
    extra, params_ = [], dict(q.params)
    if q.after is not None:
        cond, p = q.keyset(q.after, "cur_")
        extra.append(cond)
        params_.update(p)
    def read() -> list:
        return ch.query(q.sql(select, extra, f"LIMIT {q.limit + 1}"), params_,
                        settings=ch.supported(q.settings())).result_rows

    result = read()
    names = [c for c, _ in cols]
    if q.table == q.spec.by_entry and not _newest_first([r[1 + len(names):] for r in result]):
        # The copy's page relies on ClickHouse keeping the inner order (no outer ORDER BY): should an engine
        # not keep it, the page is read again from the view's table with FINAL rather than shown wrong.
        log.warning("%s page of %s came out of order from %s; read again from %s", view, account_id, q.table,
                    q.spec.table)
        q.table = q.spec.table
        result = read()
    rows = [{"id": r[0], **dict(zip(names, r[1:1 + len(names)]))} for r in result[:q.limit]]
    more = len(result) > q.limit
    last = list(result[q.limit - 1][1 + len(names):]) if more else None
    page_ = {"view": view, "columns": list(COLUMNS[view]), "rows": rows,
             "next_cursor": encode_cursor(q, last) if more else None,
             "from": None if q.start == _ms(UNBOUNDED_LO) else _iso(q.start, q.tz),
             "to": None if q.end == _ms(UNBOUNDED_HI) else _iso(q.end, q.tz), "tz": q.tz.key}
    if not rows and q.after is None:
        hint = _scenario_named(ch, account_id, params["scenario"].strip()) if params.get("scenario") else None
        # Every row of every view comes from the account's events: none at all, and the account id is wrong
        if hint is None and not ch.rows("SELECT 1 FROM {db}.event_log WHERE account_id = {account:String} LIMIT 1",
                                        {"account": account_id}):
            hint = f"account {account_id!r} has no events at all: check the account id"
        if hint:
            page_["hint"] = hint
    return page_


# The ids of the scenarios a text names, when it is a name and not an id (the page's hint, the removal's refusal).
SCENARIOS_NAMED = ("SELECT DISTINCT scenario_id FROM {db}.enrollment_state WHERE account_id = {account:String} "
                   "AND scenario_name = {name:String} AND scenario_id != {name:String} ORDER BY scenario_id LIMIT 5")


def _scenario_named(ch, account_id: str, name: str) -> str | None:
    """An empty page filtered by a scenario *name* (the filter takes its id): say which id it is."""
    ids = [i for i, in ch.rows(SCENARIOS_NAMED, {"account": account_id, "name": name})]
    if not ids:
        return None
    return (f"'scenario' takes the scenario's id, and {name!r} is the name of {', '.join(ids)}: "
            f"filter with scenario={ids[0]}")


def _newest_first(keys: list[tuple]) -> bool:
    return all(a > b for a, b in zip(keys, keys[1:]))


def _id_condition(view: str, row_id: str) -> tuple[str, dict]:
    if view == "events":
        return "event_id = {row_id:String}", {"row_id": row_id}
    # "<scenario_id>|<second part>": either part may hold a '|', so try every split on the key prefix.
    heads = [row_id[:i] for i, c in enumerate(row_id) if c == "|"]
    if not heads:
        second = "source_event_id" if view == "scenarios" else "contact_key"
        raise QueryError(f"a {view} id is <scenario_id>|<{second}>, as in the rows' id")
    return (f"scenario_id IN {{heads:Array(String)}} AND {SPECS[view].id} = {{row_id:String}}",
            {"heads": heads[:50], "row_id": row_id})


def detail(ch, view: str, account_id: str, row_id: str, *, tz: str = "UTC", lang: str = "en") -> dict | None:
    """Every column of one line of the account (the expanded log), JSON columns parsed; None if absent."""
    if view not in SPECS:
        raise QueryError(f"unknown view {view!r}; views: {', '.join(VIEWS)}")
    if not isinstance(account_id, str) or not account_id:
        raise QueryError("an account is required")
    if not isinstance(row_id, str) or not row_id or len(row_id) > 2 * MAX_VALUE:
        raise QueryError("give the id of a row (the id of a page's row)")
    zone = _zone(tz)
    if lang not in LANGUAGES:
        raise QueryError(f"lang must be one of {', '.join(LANGUAGES)}; got {lang!r}")
    cond, params = _id_condition(view, row_id)
    # Two event-log rows share an id when a producer re-sent the event with another time: the newest is shown
    result = ch.query(f"SELECT * FROM {{db}}.{SPECS[view].table} FINAL WHERE account_id = {{account:String}} "
                      f"AND {cond} ORDER BY {SPECS[view].time} DESC LIMIT 1", {"account": account_id, **params})
    if not result.result_rows:
        return None
    row: dict[str, Any] = {"id": row_id}
    for name, value in zip(result.column_names, result.result_rows[0]):
        if isinstance(value, datetime):
            value = (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).astimezone(zone) \
                .isoformat(timespec="milliseconds")
        elif name in ("properties", "details", "message_params"):
            value = orjson.loads(value) if value else None
        row[name] = value
    # The help page's names for the expanded line, beside the table's, and the IP as the line shows it.
    if view == "events":
        row.update(created_at=row["occurred_at"], email_id=row["email"], sib_type=row["event_type"])
        if not row["ip"] and row["event_type"] not in IP_UNKNOWN_TYPES:
            row["ip"] = INTERNAL_REQUEST[lang]
    elif view == "scenarios":
        row["message"] = render(row["message_code"], row["message_params"], lang, zone.key)
        point = WORKFLOW_POINTS.get(row["workflow_point"])
        row.update(date=row["occurred_at"], user_email=row["email"], workflow_points=point[lang] if point else "")
    return row
