"""Experiment, not for use: the worker with validation replaced by a bare JSON parse.

Each message is `orjson.loads`-ed, its type's defaults are filled in (read from the schema's `Field`s), the
event time parsed to UTC and the email lower-cased; nothing is checked. It answers "how fast would the
worker go if validation cost only a parse?", the floor of any faster (compiled) validator, so the README
can say whether one would reach the ingest goal.

    python -m bench.run --events 400000 --only faust --variant unvalidated:bench.experiments.agents_unvalidated
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, get_type_hints

import orjson
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

import processors.pipeline as _pipeline
from processors.agents import pipeline_stats  # noqa: F401  (streams.web's /health reads it from here)
from processors.validate import RawMessage, Validated
from schemas.events import EVENT_MODELS


def _defaults(model: type) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, hint in get_type_hints(model, include_extras=True).items():
        for meta in getattr(hint, "__metadata__", ()):
            if isinstance(meta, FieldInfo):
                if meta.default_factory is not None:
                    out[name] = meta.default_factory()
                elif meta.default is not PydanticUndefined:
                    out[name] = meta.default
        out.setdefault(name, None)
    return out


_DEFAULTS = {t: _defaults(m) for t, m in EVENT_MODELS.items()}
_UTC = timezone.utc


def parse_only(messages: list[RawMessage]) -> Validated:
    events, loads, parse_time = [], orjson.loads, datetime.fromisoformat
    for msg in messages:
        raw = loads(msg.value)
        ev = {**_DEFAULTS[raw["type"]], **raw}
        ev["occurred_at"] = parse_time(ev["occurred_at"]).astimezone(_UTC)
        if ev["email"]:
            ev["email"] = ev["email"].lower()
        if ev.get("wait_until"):
            ev["wait_until"] = parse_time(ev["wait_until"]).astimezone(_UTC)
        events.append((ev, msg))
    return Validated(events, [])


_pipeline.validate_batch = parse_only
