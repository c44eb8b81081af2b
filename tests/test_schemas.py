"""Event schemas and validation, pure: no broker, no ClickHouse.

Every event type has a minimal valid example here (a new type without one fails the suite), each
kind of bad input is dead-lettered with a reason that names the problem, and a hypothesis property
checks that valid track events become well-formed event-log rows.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import get_type_hints

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from processors.validate import RawMessage, validate_batch
from schemas.events import EVENT_ADAPTER, EVENT_MODELS, EVENT_NAME, EVENT_TYPES, MAX_PROPERTIES_BYTES
from schemas.rows import DIRECT_FIELDS, EVENT_LOG_COLUMNS, Source, _generic_row, event_log_row

ENVELOPE = {"event_id": "ev-1", "account_id": "acc_1", "occurred_at": "2024-05-01T10:00:00Z",
            "email": "jane@example.com"}

# One minimal example per event type: the envelope plus exactly the fields the type requires.
EXAMPLES: dict[str, dict] = {
    "track": {"event_name": "order_created"},
    "track_link": {"url": "https://example.com/a"},
    "page": {"url": "https://example.com/p"},
    "identify": {},
    "form": {"form_id": "f1"},
    "list_addition": {"list_id": "l1"},
    "campaign_opened": {"campaign_id": 7},
    "campaign_clicked": {"campaign_id": 7, "url": "https://example.com/c"},
    "campaign_unsubscribed": {"campaign_id": 7},
    "templates_opened": {"message_id": "<m1@mail>"},
    "templates_clicked": {"message_id": "<m1@mail>", "url": "https://example.com/t"},
    "templates_unsubscribed": {"message_id": "<m1@mail>"},
    "automation_started": {"automation_id": "a1"},
    "automation_restarted": {"automation_id": "a1"},
    "automation_step_reached": {"automation_id": "a1", "step_id": "s1"},
    "automation_waiting": {"automation_id": "a1", "step_id": "s1"},
    "automation_action": {"automation_id": "a1", "step_id": "s1", "action": "send_email"},
    "automation_exited": {"automation_id": "a1"},
    "automation_removed": {"automation_id": "a1"},
}


def example(event_type: str, **changes) -> dict:
    ev = {"type": event_type, **ENVELOPE, **EXAMPLES[event_type], **changes}
    return {k: v for k, v in ev.items() if v is not _DROP}


_DROP = object()


def raw(value: bytes | None, offset: int = 0) -> RawMessage:
    return RawMessage("events", 0, offset, b"key", value, 1_700_000_000_000)


def one(value: bytes | None):
    """Validate one message: (event, None) or (None, reason)."""
    checked = validate_batch([raw(value)])
    assert len(checked.events) + len(checked.invalid) == 1
    if checked.events:
        return checked.events[0][0], None
    return None, checked.invalid[0][1]


def valid(ev: dict):
    event, reason = one(orjson.dumps(ev))
    assert reason is None, reason
    return event


def rejected(ev: dict | bytes | None) -> str:
    event, reason = one(ev if ev is None or isinstance(ev, bytes) else orjson.dumps(ev))
    assert event is None, f"accepted: {event!r}"
    return reason


def column(row: list, name: str):
    return row[EVENT_LOG_COLUMNS.index(name)]


# --- every type -----------------------------------------------------------------------------------


def test_every_event_type_has_an_example():
    assert set(EVENT_MODELS) == set(EXAMPLES), (
        f"types without an example: {sorted(set(EVENT_MODELS) - set(EXAMPLES))}; "
        f"examples of no type: {sorted(set(EXAMPLES) - set(EVENT_MODELS))}")


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_minimal_example_validates_into_its_model_and_a_row(event_type):
    event = valid(example(event_type))
    assert set(event) == set(get_type_hints(EVENT_MODELS[event_type])), "every field, defaults filled in"
    assert event["type"] == event_type
    row = event_log_row(event, Source("events", 2, 41))
    assert len(row) == len(EVENT_LOG_COLUMNS)
    assert column(row, "event_type") == event_type
    assert column(row, "event_id") == "ev-1"
    assert (column(row, "src_topic"), column(row, "src_partition"), column(row, "src_offset")) == ("events", 2, 41)
    # Each field of the example lands in its own column or in the details JSON.
    direct = {f: c for f, c, _ in DIRECT_FIELDS}
    details = orjson.loads(column(row, "details") or "{}")
    for field, value in EXAMPLES[event_type].items():
        if field in direct:
            assert column(row, direct[field]) == value, field
        else:
            assert details[field] == value, field


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_each_required_field_of_the_example_is_required(event_type):
    """The examples are minimal: without any one of their fields the event is refused, naming it."""
    for field in ["type", "event_id", "account_id", "occurred_at", *EXAMPLES[event_type]]:
        reason = rejected(example(event_type, **{field: _DROP}))
        expected = "missing field 'type'" if field == "type" else f"{field}: required field missing"
        assert expected in reason, (field, reason)


# --- normalisation --------------------------------------------------------------------------------


def test_occurred_at_with_offset_becomes_utc_truncated_to_milliseconds():
    event = valid(example("track", occurred_at="2024-05-01T12:34:56.789999+02:00"))
    assert event["occurred_at"] == datetime(2024, 5, 1, 10, 34, 56, 789000, tzinfo=timezone.utc)
    assert event["occurred_at"].utcoffset() == timedelta(0)
    assert event["occurred_at"].tzinfo is timezone.utc  # not pydantic's TzInfo: its calls cost per event
    event = valid(example("track", occurred_at="2024-12-31T23:30:00.0005-05:30"))
    assert event["occurred_at"] == datetime(2025, 1, 1, 5, 0, 0, 0, tzinfo=timezone.utc)


def test_the_future_limit_follows_the_clock():
    from schemas import events
    events._future_limit[0] = datetime.now(timezone.utc) - timedelta(hours=1)  # as computed long ago
    soon = (datetime.now(timezone.utc) + timedelta(hours=23)).isoformat()
    assert valid(example("track", occurred_at=soon))["occurred_at"] > datetime.now(timezone.utc)
    assert "future" in rejected(example("track", occurred_at=_FUTURE))


def test_a_removal_command_more_than_a_day_ahead_is_refused():
    from pydantic import ValidationError

    from schemas.commands import COMMAND_ADAPTER

    command = {"request_id": "r1", "account_id": "a1", "scenario_id": "s1", "email": "ann@example.com"}
    soon = datetime.now(timezone.utc) + timedelta(hours=23)
    assert COMMAND_ADAPTER.validate_python(command | {"requested_at": soon}).requested_at <= soon
    with pytest.raises(ValidationError, match="more than 24 hours in the future"):
        COMMAND_ADAPTER.validate_python(command | {"requested_at": "2099-01-01T00:00:00Z"})


def test_tracker_event_names_and_eventdata_are_taken_as_the_tracker_sends_them():
    for name in ("Order Completed", "checkout.started", "commande validée", "x" * 255):
        assert valid(example("track", event_name=name))["event_name"] == name
    event = valid(example("track", eventdata={"id": "o-1", "data": {"total": 12.5}}))
    row = dict(zip(EVENT_LOG_COLUMNS, event_log_row(event, Source("t", 0, 0))))
    assert orjson.loads(row["details"]) == {"eventdata": {"id": "o-1", "data": {"total": 12.5}}}


def test_an_email_with_an_international_domain_is_accepted_as_written():
    assert valid(example("track", email="Contact@Société.fr"))["email"] == "contact@société.fr"
    # The same address as some senders encode it (punycode): the same contact.
    assert valid(example("track", email="Contact@xn--socit-esab.fr"))["email"] == "contact@société.fr"
    for bad in ("contact@soci été.fr", "contact@.société.fr", "contact@société"):
        assert "not a valid email" in rejected(example("track", email=bad)), bad


def test_a_transactional_email_without_a_template_is_named_by_its_message():
    """Sent without a template, an email has no template id (webhooks send none, or 0)."""
    from processors.scenarios import _params

    for missing in ({"template_id": _DROP}, {"template_id": 0}, {"template_id": None}):
        event = valid(example("templates_opened", template_name=_DROP, **missing))
        assert event["template_id"] is None
        assert _params(event) == ("templates_opened", {"name": "<m1@mail>"})
    named = valid(example("templates_opened", template_id=7, template_name="Receipt"))
    assert _params(named) == ("templates_opened", {"name": "Receipt"})


def test_naive_occurred_at_is_taken_as_utc():
    event = valid(example("track", occurred_at="2024-05-01T12:34:56.5"))
    assert event["occurred_at"] == datetime(2024, 5, 1, 12, 34, 56, 500000, tzinfo=timezone.utc)
    assert event["occurred_at"].tzinfo is not None


# Every optional field set, for the types that have it.
_FULL = {"contact_id": 42, "ip": "2001:db8::1", "message_id": "<m2@mail>", "template_id": 9, "campaign_id": 8,
         "properties": {"plan": "pro", "n": 2}, "form_name": "Newsletter", "list_name": "VIP", "campaign_name": "Sale",
         "template_name": "Receipt", "automation_name": "Welcome", "page_title": "Home", "step_id": "s2",
         "start_id": "entry-2", "entry_points": 2, "step_name": "Wait", "wait_until": "2024-05-02T10:00:00Z",
         "wait_for": "2 days", "reason": "goal_reached", "removed_by": "ops@example.com"}


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_the_compiled_row_of_each_type_is_the_generic_row(event_type):
    fields = get_type_hints(EVENT_MODELS[event_type])
    full = {k: v for k, v in _FULL.items() if k in fields and k not in EXAMPLES[event_type]}
    for ev in (valid(example(event_type)), valid(example(event_type, **full)),
               valid(example(event_type, email=None, contact_id=5, properties={}))):
        assert event_log_row(ev, Source("t", 1, 2)) == _generic_row(ev, Source("t", 1, 2))
    partial = {k: v for k, v in valid(example(event_type)).items() if k != "ip"}  # not a validated event
    assert event_log_row(partial, Source("t", 1, 2)) == _generic_row(partial, Source("t", 1, 2))


def test_email_is_lower_cased_in_the_event_and_the_row():
    event = valid(example("identify", email="John.Doe@Example.COM"))
    assert event["email"] == "john.doe@example.com"
    assert column(event_log_row(event, Source("t", 0, 0)), "email") == "john.doe@example.com"


def test_contact_id_zero_means_no_contact():
    event = valid(example("identify", contact_id=0))
    assert event["contact_id"] is None
    assert column(event_log_row(event, Source("t", 0, 0)), "contact_id") == 0
    assert valid(example("identify", contact_id=42))["contact_id"] == 42
    # 0 with no email names nobody: refused.
    assert "no contact" in rejected(example("identify", contact_id=0, email=_DROP))


def test_contact_id_alone_is_enough():
    event = valid(example("identify", email=_DROP, contact_id=9))
    assert (event["contact_id"], event["email"]) == (9, None)
    assert column(event_log_row(event, Source("t", 0, 0)), "email") == ""


def test_absent_ip_is_an_internal_request():
    event = valid(example("page"))
    assert event["ip"] is None
    assert column(event_log_row(event, Source("t", 0, 0)), "ip") == ""
    assert valid(example("page", ip=""))["ip"] is None
    assert valid(example("page", ip="2001:DB8:0::1"))["ip"] == "2001:db8::1"
    assert valid(example("page", ip="203.0.113.9"))["ip"] == "203.0.113.9"


@st.composite
def _ipv6_texts(draw) -> str:
    """IPv6 texts as clients write them: runs of zeros, either case, leading zeros, :: anywhere, junk."""
    words = [0 if draw(st.booleans()) else draw(st.integers(0, 0xFFFF)) for _ in range(8)]
    parts = [draw(st.sampled_from(["{:x}", "{:X}", "{:04x}", "{:01x}"])).format(w) for w in words]
    text = ":".join(parts)
    i, j = sorted((draw(st.integers(0, 8)), draw(st.integers(0, 8))))
    if draw(st.booleans()) and all(w == 0 for w in words[i:j]) and j - i >= 1:
        text = ":".join(parts[:i]) + "::" + ":".join(parts[j:])
    if draw(st.booleans()):  # an embedded IPv4, a zone, or damage
        text = draw(st.sampled_from([
            text.rsplit(":", 2)[0] + ":1.2.3.4", text + "%eth0", text + ":", ":" + text, text.replace(":", "::", 1),
            text[:-1], text + "0", text.replace("0", "g", 1), "::ffff:" + "1.2.3.4", "::ffff:102:304", "::1"]))
    return text


@settings(max_examples=3000, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(_ipv6_texts() | st.text(alphabet="0123456789abcdefABCDEF:.%", max_size=45))
def test_ip_canonical_form_is_what_ipaddress_gives(text):
    """The fast path for IPv6 (the C library) accepts and writes exactly what Python's ipaddress does (an
    IPv4-mapped address as the IPv4 address it maps)."""
    from ipaddress import ip_address

    from schemas.events import _canonical_ip

    try:
        address = ip_address(text)
        expected = str(getattr(address, "ipv4_mapped", None) or address)
    except ValueError:
        expected = None
    try:
        got = _canonical_ip.__wrapped__(text)
    except ValueError:
        got = None
    assert got == expected, text


def test_null_properties_are_absent_ones_and_rejections_say_what_to_send():
    assert valid(example("page", properties=None))["properties"] == {}
    _, reason = one(orjson.dumps(example("templates_opened", subject="s", tags=["t"], ts=1)))
    assert reason == "subject, tags, ts: not fields of a 'templates_opened' event (custom data goes in 'properties')"
    _, reason = one(orjson.dumps(example("page", occurred_at=1764237600000000)))  # microseconds
    assert "Unix time in seconds or milliseconds" in reason and "1764237600000000" in reason
    _, reason = one(orjson.dumps(example("page", properties={"a": "é" * 30000})))
    assert reason.startswith("properties: 58.6 KB as compact UTF-8 JSON, more than the 50 KB allowed"), reason


def test_an_ipv4_mapped_address_is_the_ipv4_address_it_maps():
    for form in ("::ffff:192.0.2.7", "::FFFF:c000:207", "0:0:0:0:0:ffff:192.0.2.7"):
        assert valid(example("page", ip=form))["ip"] == "192.0.2.7", form
    assert valid(example("page", ip="::192.0.2.7"))["ip"] == "::c000:207"  # IPv4-compatible: not a mapping


def test_boundaries_that_are_still_valid():
    valid(example("track", event_name="a" * 255))
    valid(example("track", event_name="Order-created_2"))
    soon = (datetime.now(timezone.utc) + timedelta(hours=23)).isoformat()
    valid(example("track", occurred_at=soon))
    # properties just under the limit (the limit is on the serialized size)
    filler = "x" * (MAX_PROPERTIES_BYTES - len(orjson.dumps({"p": ""})))
    assert len(orjson.dumps({"p": filler})) == MAX_PROPERTIES_BYTES
    valid(example("track", properties={"p": filler}))


# --- bad input ------------------------------------------------------------------------------------

_FUTURE = (datetime.now(timezone.utc) + timedelta(hours=25)).isoformat()
_BIG = {"p": "x" * (MAX_PROPERTIES_BYTES + 1)}

BAD = [
    # (id, message value, words the reason must contain)
    ("not json", b"{this is not json", ["not valid json"]),
    ("truncated json", orjson.dumps(example("track"))[:-3], ["not valid json"]),
    ("not utf-8", b"\xff\xfe\x00{", ["json"]),
    ("json array", b'[{"type": "track"}]', ["not a json object"]),
    ("json number", b"42", ["not a json object"]),
    ("json string", b'"track"', ["not a json object"]),
    ("json null", b"null", ["not a json object"]),
    ("unknown type", orjson.dumps(example("track", type="track_everything")), ["unknown event type", "track_everything"]),
    ("missing type", orjson.dumps(example("track", type=_DROP)), ["missing field 'type'"]),
    ("missing contact", orjson.dumps(example("track", email=_DROP)), ["no contact", "contact_id", "email"]),
    ("null contact", orjson.dumps(example("track", email=None, contact_id=None)), ["no contact"]),
    ("bad email", orjson.dumps(example("track", email="jane.example.com")), ["email", "not a valid email"]),
    ("email with space", orjson.dumps(example("track", email="jane doe@example.com")), ["email"]),
    ("oversized properties", orjson.dumps(example("track", properties=_BIG)), ["properties", "50 kb"]),
    ("future occurred_at", orjson.dumps(example("track", occurred_at=_FUTURE)), ["occurred_at: 20", "future"]),
    ("bad occurred_at", orjson.dumps(example("track", occurred_at="yesterday")), ["occurred_at"]),
    ("contact_id text", orjson.dumps(example("track", contact_id="abc")), ["contact_id", "integer"]),
    ("negative contact_id", orjson.dumps(example("track", contact_id=-1)), ["contact_id: -1 is negative"]),
    ("contact_id beyond 64 bits", orjson.dumps(example("track"))[:-1] + b',"contact_id":18446744073709551616}',
     ["contact_id: 18446744073709551616 does not fit in 64 bits"]),
    ("old occurred_at", orjson.dumps(example("track", occurred_at="1999-12-31T23:00:00Z")),
     ["occurred_at: 1999-12-31t23:00:00+00:00 is before 2000-01-01"]),
    ("template_id list", orjson.dumps(example("templates_opened", template_id=[3])), ["template_id", "integer"]),
    ("empty bytes", b"", ["empty message"]),
    ("no value", None, ["empty message"]),
    ("event_name tab", orjson.dumps(example("track", event_name="order\tcreated")), ["event_name", "control characters", "'order\\tcreated'"]),
    ("event_name blank", orjson.dumps(example("track", event_name="   ")), ["event_name", "not only spaces"]),
    ("eventdata too big", orjson.dumps(example("track", eventdata={"d": "x" * 60_000})), ["eventdata", "50 kb"]),
    ("event_name too long", orjson.dumps(example("track", event_name="a" * 256)), ["event_name"]),
    ("event_name empty", orjson.dumps(example("track", event_name="")), ["event_name"]),
    ("invalid ip", orjson.dumps(example("page", ip="999.1.1.1")), ["ip", "not an ip address"]),
    ("ip text", orjson.dumps(example("page", ip="localhost")), ["ip", "not an ip address"]),
    ("extra field", orjson.dumps(example("track", colour="blue")), ["colour", "not a field of a 'track' event", "properties"]),
    ("bad account_id", orjson.dumps(example("track", account_id="acc 1")), ["account_id", "letters", "'acc 1'"]),
    ("bad exit reason", orjson.dumps(example("automation_exited", reason="bored")), ["reason"]),
]


@pytest.mark.parametrize("value,words", [pytest.param(v, w, id=i) for i, v, w in BAD])
def test_bad_input_is_dead_lettered_with_a_reason_naming_the_problem(value, words):
    reason = rejected(value)
    for word in words:
        assert word in reason.lower(), (word, reason)


def test_a_batch_keeps_valid_events_and_pairs_each_dead_letter_with_its_message():
    messages = [raw(orjson.dumps(example("track", event_id="a")), 10), raw(b"[]", 11),
                raw(orjson.dumps(example("form", event_id="b")), 12), raw(None, 13)]
    checked = validate_batch(messages)
    assert [(ev["event_id"], m.offset) for ev, m in checked.events] == [("a", 10), ("b", 12)]
    assert [(m.offset, reason) for m, reason in checked.invalid] == [
        (11, "the message is not a JSON object"), (13, "empty message")]


# --- bugs found and fixed: keep them fixed ----------------------------------------------------------


def test_huge_integer_in_properties_is_dead_lettered():
    value = orjson.dumps(example("track"))[:-1] + b',"properties":{"n":123456789012345678901234567890}}'
    assert "properties" in rejected(value)


@pytest.mark.parametrize("event_type,field", [("identify", "contact_id"), ("campaign_opened", "campaign_id"),
                                              ("templates_opened", "template_id"),
                                              ("automation_started", "entry_points")])
def test_integers_beyond_uint64_are_refused(event_type, field):
    value = orjson.dumps(example(event_type))[:-1] + f',"{field}":{2**64}}}'.encode()
    assert field in rejected(value)


def test_properties_that_are_no_object_are_named():
    reason = rejected(example("track", properties=[1]))
    assert "properties" in reason and "not a JSON object" not in reason, reason


def test_property_keys_are_kept_as_sent():
    props = {" a ": 1, "a": 2}
    assert valid(example("track", properties=props))["properties"] == props


# --- property -------------------------------------------------------------------------------------

_json_scalar = (st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1)
                | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40))
_json = st.recursive(_json_scalar, lambda inner: st.lists(inner, max_size=4)
                     | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=12)
# Top-level keys without surrounding whitespace: see test_property_keys_are_kept_as_sent.
_key = st.text(max_size=20).filter(lambda k: k == k.strip())
_event_id = st.text(st.characters(exclude_categories=("Z", "C")), min_size=1, max_size=128)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(event_id=_event_id,
       event_name=st.from_regex(EVENT_NAME, fullmatch=True).filter(
           lambda n: len(n) <= 255 and not any(0xD800 <= ord(c) <= 0xDFFF for c in n)),  # JSON has no lone surrogate
       email=st.emails().filter(lambda e: len(e) <= 254),
       properties=st.dictionaries(_key, _json, max_size=6),
       contact_id=st.none() | st.integers(0, 2**63))
def test_any_valid_track_event_becomes_a_row(event_id, event_name, email, properties, contact_id):
    sent = example("track", event_id=event_id, event_name=event_name, email=email, properties=properties,
                   contact_id=contact_id)
    event = EVENT_ADAPTER.validate_json(orjson.dumps(sent))
    assert event["type"] == "track" and event["event_name"] == event_name
    row = event_log_row(event, Source("events", 1, 5))
    assert len(row) == len(EVENT_LOG_COLUMNS)
    assert column(row, "event_id") == event_id
    local, _, domain = column(row, "email").rpartition("@")
    # Lower-cased; a punycode domain in Unicode, which encodes back to it.
    assert (local, domain.encode("idna").decode("ascii")) == tuple(email.lower().rsplit("@", 1))
    assert column(row, "event_name") == event_name
    assert column(row, "contact_id") == (contact_id or 0)
    assert column(row, "source_name") == event_name
    stored = column(row, "properties")
    assert (orjson.loads(stored) if stored else {}) == properties


def test_the_readme_marks_exactly_the_required_fields_of_each_type():
    """The event shapes table writes required fields in bold: a producer reads it to know what it must send."""
    import re
    from pathlib import Path

    from pydantic import TypeAdapter

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    envelope = {"event_id", "account_id", "occurred_at", "type"}
    intro = readme[readme.index("Every event is one JSON object"):readme.index("| **`type`** | extra fields |")]
    assert set(re.findall(r"\*\*`(\w+)`\*\*", intro)) == envelope - {"type"}
    table = readme[readme.index("| **`type`** | extra fields |"):readme.index("Unknown fields are refused")]
    marked: dict[str, set[str]] = {}
    for line in table.splitlines()[2:]:
        if not line.startswith("| `"):
            continue
        types_cell, fields_cell = line.split(" | ", 1)
        clicks = re.search(r"\(\+ (.*?) for clicks\)", fields_cell)  # fields of the row's clicked type only
        bold = set(re.findall(r"\*\*`(\w+)`\*\*", fields_cell.replace(clicks.group(0), "") if clicks else fields_cell))
        if fields_cell.startswith("…"):  # the automation rows: what the row above them requires, and more
            bold |= {"automation_id"}
        for name in re.findall(r"`(\w+)`", types_cell):
            marked[name] = bold | (set(re.findall(r"\*\*`(\w+)`\*\*", clicks.group(1)))
                                   if clicks and name.endswith("_clicked") else set())
    assert set(marked) == set(EVENT_TYPES)
    for name, model in EVENT_MODELS.items():
        required = set(TypeAdapter(model).json_schema().get("required", [])) - envelope
        assert marked[name] == required, name
