"""Event shapes: the single source of truth for what travels on the events topic.

One envelope, one TypedDict per `type`, joined in a union discriminated on `type` (validation without a
discriminator is several times slower). Kafka carries the JSON bytes; nothing else redefines these.
Validation returns a plain dict with every field of its type (defaults filled in): building model
instances cost twice as much per event, and the hot path reads fields by key anyway.
"""
from __future__ import annotations

import re
from functools import lru_cache
from datetime import datetime, timedelta, timezone
from ipaddress import ip_address
from socket import AF_INET6, inet_ntop, inet_pton
from typing import Annotated, Any, Literal, Union, get_args, get_type_hints

import orjson
from pydantic import AfterValidator, ConfigDict, Field, TypeAdapter
from typing_extensions import TypedDict  # pydantic needs typing_extensions' TypedDict before Python 3.12

MAX_PROPERTIES_BYTES = 50 * 1024
MAX_FUTURE = timedelta(hours=24)
INTERNAL_REQUEST = {"en": "internal request", "fr": "requête interne"}
# Without an `ip`, an event was triggered by the platform itself ("internal request"), except a contact's
# email engagement: the email services' webhooks never carry the contact's IP, so there it is unknown
# (shown empty), not internal.
IP_UNKNOWN_TYPES = ("campaign_opened", "campaign_clicked", "campaign_unsubscribed",
                    "templates_opened", "templates_clicked", "templates_unsubscribed")

_EMAIL = re.compile(r"^[^@\s\"(),:;<>\[\]\\]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$")
# The tracker takes any name ("Order Completed", "checkout.started"); the Events API is stricter (letters,
# digits, '_', '-'). Both fit here: 1 to 255 characters, no control characters, not only spaces.
EVENT_NAME = r"^[^\x00-\x1f\x7f]*[^\x00-\x20\x7f][^\x00-\x1f\x7f]*$"
EVENT_NAME_MAX = 255
Id = Annotated[str, Field(min_length=1, max_length=128)]
ACCOUNT_ID = r"^[A-Za-z0-9_.-]{1,64}$"  # events, commands and API keys: one rule
AccountId = Annotated[str, Field(pattern=ACCOUNT_ID)]
# Ids stored in UInt64 columns; strict: a JSON bool or a string is not an id.
UInt64 = Annotated[int, Field(ge=0, le=2**64 - 1, strict=True)]
OLDEST = datetime(2000, 1, 1, tzinfo=timezone.utc)


_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}\Z")
# now + 24 h as last computed. The true limit only grows, so an event under this one is under it too; only an
# event past it asks the clock again (events are normally about a day under it: no clock read per event).
_future_limit: list[datetime] = [OLDEST]


@lru_cache(maxsize=1 << 14)  # a contact's events repeat its address
def _canonical_ip(v: str) -> str:
    """What `str(ip_address(v))` gives, except that an IPv4-mapped IPv6 address (::ffff:192.0.2.7, as
    dual-stack servers report IPv4 clients) is the IPv4 address it maps: one client, one address, found by
    either form. A plain IPv6 address goes through the C library (1.1 µs instead of 8.5: py-spy had put
    ipaddress at 8% of the worker's event loop); forms where the two may differ (a zone, an embedded IPv4)
    go through ipaddress. tests/test_schemas.py holds the two equal on random input."""
    if "." not in v and "%" not in v:
        try:
            text = inet_ntop(AF_INET6, inet_pton(AF_INET6, v))
        except (OSError, ValueError):  # not an IPv6 address (or a NUL): ipaddress says which
            pass
        else:
            if "." not in text:  # the C library writes IPv4-mapped and -compatible addresses dotted
                return text
    try:
        address = ip_address(v)
    except ValueError:
        raise ValueError(f"not an IP address: {v[:64]!r}") from None
    return str(getattr(address, "ipv4_mapped", None) or address)


@lru_cache(maxsize=1 << 16)  # a contact's events repeat its address: the regex runs once per address
def normalize_email(v: str | None) -> str | None:
    if v is None or v == "":
        return None
    if len(v) > 254 or not (_EMAIL.match(v) or _EMAIL.match(_ascii_domain(v))):
        raise ValueError(f"not a valid email address: {v[:80]!r}")
    v = v.lower()
    return _unicode_domain(v) if "xn--" in v else v


def _unicode_domain(v: str) -> str:
    """One contact, one address: an international domain is kept in its Unicode form, as people write it, so
    contact@xn--socit-esab.fr (how some senders encode it) is contact@société.fr."""
    local, _at, domain = v.rpartition("@")
    try:
        return f"{local}@{domain.encode('ascii').decode('idna')}"
    except UnicodeError:
        return v


def _ascii_domain(v: str) -> str:
    """The address with an international domain in its ASCII form (contact@société.fr is
    contact@xn--socit-esab.fr), so that such a domain is checked by the same rule; "" if it has none."""
    local, at, domain = v.rpartition("@")
    if not at or domain.isascii():
        return ""
    try:
        return f"{local}@{domain.encode('idna').decode('ascii')}"
    except UnicodeError:
        return ""


def _utc_ms(v: datetime) -> datetime:
    # Hot path (every event). astimezone() is the cheapest way to `timezone.utc` (0.4 µs; replace() takes
    # 1.1); with that tzinfo, later comparisons and timestamp() skip pydantic's TzInfo calls.
    v = v.replace(tzinfo=timezone.utc) if v.tzinfo is None else v.astimezone(timezone.utc)
    if v.microsecond % 1000:
        v = v.replace(microsecond=v.microsecond - v.microsecond % 1000)
    if v > _future_limit[0]:
        _future_limit[0] = datetime.now(timezone.utc) + MAX_FUTURE
        if v > _future_limit[0]:
            raise ValueError(f"{v.isoformat()} is more than 24 hours in the future (check the sender's clock "
                             "and time zone)")
    if v < OLDEST:
        raise ValueError(f"{v.isoformat()} is before 2000-01-01: send when the event happened (ISO 8601 with an "
                         "offset, or Unix time in seconds or milliseconds)")
    return v


def canonical_ip(v: str | None) -> str | None:
    """The form an IP address is stored in (the event log's `ip`; also what a page's `ip` filter compares)."""
    if v is None or v == "":
        return None
    if _IPV4.match(v):  # canonical dotted quad: what ip_address() would return, at a fraction of the cost
        return v
    return _canonical_ip(v)


def _too_big(size: int) -> ValueError:
    return ValueError(f"{size / 1024:.1f} KB as compact UTF-8 JSON, more than the {MAX_PROPERTIES_BYTES // 1024} KB "
                      "allowed (keep large data elsewhere and send a reference to it)")


def _properties_size(v: dict[str, Any] | None) -> dict[str, Any]:
    if v is None:  # null is absent, as for the other optional fields
        return {}
    try:
        size = len(orjson.dumps(v)) if v else 0
    except orjson.JSONEncodeError as exc:  # e.g. an integer beyond 64 bits
        raise ValueError(f"properties cannot be stored: {exc}") from None
    if size > MAX_PROPERTIES_BYTES:
        raise _too_big(size)
    return v


def _eventdata_size(v: dict[str, Any] | None) -> dict[str, Any] | None:
    if v and (size := len(orjson.dumps(v))) > MAX_PROPERTIES_BYTES:
        raise _too_big(size)
    return v or None


def _wait_until_utc(v: datetime | None) -> datetime | None:
    if v is None:
        return None
    return (v.replace(tzinfo=timezone.utc) if v.tzinfo is None else v).astimezone(timezone.utc)


# Optional fields default to None (absent and null are the same); names default to "". Defaults are
# filled in by validation, so every event of a type has the same keys.
NameOr = Annotated[str, Field(max_length=512, default="")]
Url = Annotated[str, Field(min_length=1, max_length=4096)]
StepId = Annotated[str, Field(min_length=1, max_length=128)]
ACCOUNT_ID = r"^[A-Za-z0-9_.-]{1,64}$"  # events, commands and API keys: one rule
AccountId = Annotated[str, Field(pattern=ACCOUNT_ID)]


class Envelope(TypedDict):
    """Fields every event carries. `ip` absent means the platform itself triggered the event."""

    event_id: Id
    account_id: AccountId
    occurred_at: Annotated[datetime, AfterValidator(_utc_ms)]
    contact_id: Annotated[Union[UInt64, None], AfterValidator(lambda v: v or None),  # webhooks send 0
                          Field(default=None)]
    email: Annotated[Union[str, None], AfterValidator(normalize_email), Field(default=None)]
    ip: Annotated[Union[str, None], AfterValidator(canonical_ip), Field(default=None)]
    message_id: Annotated[Union[str, None], Field(max_length=256, default=None)]
    template_id: Annotated[Union[UInt64, None], Field(default=None)]
    campaign_id: Annotated[Union[UInt64, None], Field(default=None)]
    properties: Annotated[Union[dict[str, Any], None], AfterValidator(_properties_size), Field(default_factory=dict)]


# --- tracker -----------------------------------------------------------------------------------
class TrackEvent(Envelope):
    """A custom event sent with the tracker's `track` method (e.g. order_created)."""

    type: Literal["track"]
    event_name: Annotated[str, Field(min_length=1, max_length=EVENT_NAME_MAX, pattern=EVENT_NAME)]
    # The tracker's `eventdata` ({"id": ..., "data": {...}} about the event, beside `properties` about the
    # contact): kept as sent, in the event log's `details`.
    eventdata: Annotated[Union[dict[str, Any], None], AfterValidator(_eventdata_size), Field(default=None)]


class LinkClick(Envelope):
    type: Literal["track_link"]
    url: Url


class PageView(Envelope):
    type: Literal["page"]
    url: Url
    page_title: Annotated[Union[str, None], Field(max_length=512, default=None)]


class Identify(Envelope):
    type: Literal["identify"]


# --- forms and lists -----------------------------------------------------------------------------
class FormSubmitted(Envelope):
    type: Literal["form"]
    form_id: Id
    form_name: NameOr


class ListAddition(Envelope):
    type: Literal["list_addition"]
    list_id: Id
    list_name: NameOr


# --- campaign (marketing) email ------------------------------------------------------------------
class _CampaignEmail(Envelope):
    campaign_id: UInt64  # type: ignore[misc]  # required here
    campaign_name: NameOr


class CampaignOpened(_CampaignEmail):
    type: Literal["campaign_opened"]


class CampaignClicked(_CampaignEmail):
    type: Literal["campaign_clicked"]
    url: Url


class CampaignUnsubscribed(_CampaignEmail):
    type: Literal["campaign_unsubscribed"]


# --- transactional (template) email --------------------------------------------------------------
class _TemplateEmail(Envelope):
    # An email sent without a template (its HTML given with the send) has no template id; webhooks then send
    # none, or 0. The message id names the email either way.
    template_id: Annotated[Union[UInt64, None], AfterValidator(lambda v: v or None), Field(default=None)]
    template_name: NameOr
    message_id: Annotated[str, Field(min_length=1, max_length=256)]  # type: ignore[misc]


class TemplateOpened(_TemplateEmail):
    type: Literal["templates_opened"]


class TemplateClicked(_TemplateEmail):
    type: Literal["templates_clicked"]
    url: Url


class TemplateUnsubscribed(_TemplateEmail):
    type: Literal["templates_unsubscribed"]


# --- automation engine ---------------------------------------------------------------------------
class _Automation(Envelope):
    """Published by the automation engine; the scenario log and the enrollment state derive from these."""

    automation_id: Id
    automation_name: NameOr
    step_id: Annotated[str, Field(max_length=128, default="")]
    # The scenario's entry point, and how many it has: start_id is shown only when it has several.
    start_id: Annotated[str, Field(max_length=128, default="")]
    entry_points: Annotated[int, Field(ge=1, le=1000, strict=True, default=1)]


class AutomationStarted(_Automation):
    type: Literal["automation_started"]


class AutomationRestarted(_Automation):
    type: Literal["automation_restarted"]


class AutomationStepReached(_Automation):
    type: Literal["automation_step_reached"]
    step_id: StepId  # type: ignore[misc]  # required here
    step_name: NameOr


class AutomationWaiting(_Automation):
    type: Literal["automation_waiting"]
    step_id: StepId  # type: ignore[misc]
    wait_until: Annotated[Union[datetime, None], AfterValidator(_wait_until_utc), Field(default=None)]
    wait_for: NameOr  # e.g. "2 days", "email opened"


class AutomationAction(_Automation):
    """An action ran at a step, e.g. an email sent (with its message / template / campaign id)."""

    type: Literal["automation_action"]
    step_id: StepId  # type: ignore[misc]
    action: Annotated[str, Field(min_length=1, max_length=128)]  # e.g. send_email, add_to_list, webhook
    template_name: NameOr  # the email sent, as the marketer named it: the scenario log's "Email … sent"


class AutomationExited(_Automation):
    type: Literal["automation_exited"]
    reason: Annotated[Literal["completed", "goal_reached", "condition_not_met", "unsubscribed", "error", "other"],
                      Field(default="completed")]


class AutomationRemoved(_Automation):
    """A contact manually removed from the scenario (written by the removal command's processor)."""

    type: Literal["automation_removed"]
    removed_by: NameOr


def _has_contact(event: dict) -> dict:
    if event["contact_id"] is None and event["email"] is None:
        raise ValueError("the event names no contact: give contact_id or email (or both)")
    return event


Event = Annotated[
    Union[
        TrackEvent, LinkClick, PageView, Identify, FormSubmitted, ListAddition,
        CampaignOpened, CampaignClicked, CampaignUnsubscribed,
        TemplateOpened, TemplateClicked, TemplateUnsubscribed,
        AutomationStarted, AutomationRestarted, AutomationStepReached, AutomationWaiting,
        AutomationAction, AutomationExited, AutomationRemoved,
    ],
    Field(discriminator="type"),
    AfterValidator(_has_contact),
]
EVENT_MODELS: dict[str, type[Envelope]] = {
    get_args(get_type_hints(m)["type"])[0]: m for m in get_args(get_args(Event)[0])
}
for _model in EVENT_MODELS.values():
    _model.__pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[attr-defined]
EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)
EVENT_TYPES = tuple(EVENT_MODELS)
AUTOMATION_TYPES = tuple(t for t in EVENT_TYPES if t.startswith("automation_"))


def contact_key(email: str | None, contact_id: int | None) -> str:
    """A contact within its account: its email when present (the tracker always has it), else its id. The
    key of its state, and of its Kafka messages after the account (`partition_key`)."""
    return email if email else f"id:{contact_id}"


def partition_key(account_id: str, email: str | None, contact_id: int | None) -> bytes:
    """Kafka key: one contact's events (and removal commands) share a partition, so stay in order."""
    return f"{account_id}:{contact_key(email.lower() if email else None, contact_id)}".encode()
