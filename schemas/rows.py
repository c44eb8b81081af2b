"""How a validated event becomes an event-log row (columns of `event_log`, clickhouse/ddl)."""
from __future__ import annotations

from datetime import datetime
from typing import NamedTuple

import orjson

from schemas.events import Envelope

# Model fields stored in a column of their own, in the order of EVENT_LOG_COLUMNS below.
# (model field, column, empty value) — None becomes the empty value: ClickHouse columns are not Nullable.
DIRECT_FIELDS: tuple[tuple[str, str, object], ...] = (
    ("account_id", "account_id", ""),
    ("event_id", "event_id", ""),
    ("type", "event_type", ""),
    ("event_name", "event_name", ""),
    ("occurred_at", "occurred_at", None),
    ("contact_id", "contact_id", 0),
    ("email", "email", ""),
    ("ip", "ip", ""),
    ("form_id", "form_id", ""),
    ("list_id", "list_id", ""),
    ("campaign_id", "campaign_id", 0),
    ("template_id", "template_id", 0),
    ("message_id", "message_id", ""),
    ("automation_id", "automation_id", ""),
    ("step_id", "step_id", ""),
    ("start_id", "start_id", ""),
    ("url", "url", ""),
)
# Fields whose value is shown as "the name of the form / email / automation" (first one present).
NAME_FIELDS = ("form_name", "list_name", "campaign_name", "template_name", "automation_name", "event_name",
               "page_title", "url")
SOURCE_COLUMNS = ("src_topic", "src_partition", "src_offset")
EVENT_LOG_COLUMNS: tuple[str, ...] = (
    *(c for _, c, _ in DIRECT_FIELDS), "source_name", "properties", "details", *SOURCE_COLUMNS,
)
# Everything else (names, reason, action, wait_until, ...) is kept in the `details` JSON column.
_DIRECT = {f for f, _, _ in DIRECT_FIELDS} | {"properties"}


class Source(NamedTuple):
    """Where a message was read: kept on every row so a replay or a re-delivery is traceable."""

    topic: str
    partition: int
    offset: int


def _json_default(v):
    if isinstance(v, datetime):
        return v.isoformat()
    raise TypeError(type(v).__name__)


def event_log_row(ev: Envelope, src: Source) -> list:
    row = []
    for field, _column, empty in DIRECT_FIELDS:
        v = ev.get(field)
        row.append(empty if v is None else v)
    row.append(next((ev[f] for f in NAME_FIELDS if ev.get(f)), ""))
    row.append(orjson.dumps(ev["properties"]).decode() if ev["properties"] else "")
    extra = {k: v for k, v in ev.items() if k not in _DIRECT and v is not None and v != ""}
    row.append(orjson.dumps(extra, default=_json_default).decode() if extra else "")
    row.extend(src)
    return row
