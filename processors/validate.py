"""Turn raw Kafka messages into validated events or dead letters with a reason in words."""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from pydantic import ValidationError

from schemas.events import EVENT_ADAPTER, EVENT_MODELS, Envelope


class RawMessage(NamedTuple):
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int
    headers: tuple = ()  # (name, bytes) pairs, e.g. the mark of a re-driven dead letter


@dataclass
class Validated:
    events: list[tuple[Envelope, RawMessage]]
    invalid: list[tuple[RawMessage, str]]


UINT64_MAX = 2**64 - 1
# What a pattern allows, in words (schemas/events.py holds the patterns).
PATTERN_HINTS = {
    "event_name": "a name without control characters (tabs, line breaks) and not only spaces",
    "account_id": "1 to 64 letters, digits, '_', '.' or '-'",
}


def explain(exc: ValidationError) -> str:
    """One line a person can act on: which field, what is wrong."""
    parts = []
    errors = exc.errors(include_url=False)
    unknown = [e for e in errors if e["type"] == "extra_forbidden"]
    if unknown:  # all of them at once: a producer fixes its mapping in one go
        names = ", ".join(".".join(str(p) for p in e["loc"][1 if e["loc"][0] in EVENT_MODELS else 0:])
                          for e in unknown)
        kind = f"a {unknown[0]['loc'][0]!r} event" if unknown[0]["loc"][0] in EVENT_MODELS else "this message"
        parts.append(f"{names}: not {'a field' if len(unknown) == 1 else 'fields'} of {kind} "
                     "(custom data goes in 'properties')")
        errors = [e for e in errors if e["type"] != "extra_forbidden"]
    for err in errors[:5]:
        path = list(err["loc"])
        if path and path[0] in EVENT_MODELS:  # the union's tag: say "email", not "page.email"
            path = path[1:]
        loc = ".".join(str(p) for p in path) or "message"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "json_invalid":
            parts.append(f"not valid JSON ({err.get('ctx', {}).get('error', msg)})")
        elif err["type"] in ("model_attributes_type", "model_type", "dict_type") and len(err["loc"]) <= 1 \
                and not path:
            parts.append("the message is not a JSON object")
        elif err["type"] == "union_tag_invalid":
            tag = err.get("ctx", {}).get("tag", "?")
            parts.append(f"unknown event type {tag!r} (known: {', '.join(EVENT_MODELS)})")
        elif err["type"] == "union_tag_not_found":
            parts.append("missing field 'type'")
        elif err["type"] == "missing":
            parts.append(f"{loc}: required field missing")
        elif err["type"].startswith(("datetime", "date_")):
            parts.append(f"{loc}: {msg} (send ISO 8601 with an offset, e.g. 2026-11-27T10:00:00+01:00, or Unix "
                         f"time in seconds or milliseconds; got {str(err.get('input'))[:40]!r})")
        elif err["type"] in ("less_than_equal", "greater_than_equal") and err.get("ctx", {}).get("le") == UINT64_MAX:
            parts.append(f"{loc}: {str(err.get('input'))[:40]} does not fit in 64 bits (at most {UINT64_MAX})")
        elif err["type"] == "greater_than_equal" and err.get("ctx", {}).get("ge") == 0:
            parts.append(f"{loc}: {str(err.get('input'))[:40]} is negative (ids are whole numbers from 0)")
        elif err["type"] == "string_pattern_mismatch" and path and path[-1] in PATTERN_HINTS:
            parts.append(f"{loc}: {PATTERN_HINTS[path[-1]]}, not {str(err.get('input'))[:80]!r}")
        else:
            parts.append(f"{loc}: {msg}" if path else msg)
    more = len(errors) - 5
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def validate_batch(messages: list[RawMessage]) -> Validated:
    events: list[tuple[Envelope, RawMessage]] = []
    invalid: list[tuple[RawMessage, str]] = []
    validate_json = EVENT_ADAPTER.validate_json
    for msg in messages:
        if not msg.value:
            invalid.append((msg, "empty message"))
            continue
        try:
            events.append((validate_json(msg.value), msg))
        except ValidationError as exc:
            invalid.append((msg, explain(exc)))
        except Exception as exc:  # never let one message stop the stream
            invalid.append((msg, f"unreadable message: {type(exc).__name__}: {exc}"))
    return Validated(events, invalid)
