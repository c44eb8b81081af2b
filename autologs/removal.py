"""Manual removal of up to 50 contacts from a scenario (the seed's "remove selected contacts").

The enrollment state tells who is in the scenario; each contact found active or waiting gets one
command on the commands topic, keyed like its events, so the worker applies it in order with them.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Awaitable, Callable

import orjson

from autologs.config import Settings
from schemas.commands import MAX_CONTACTS_PER_REMOVAL, RemoveContact, new_request_id
from processors.scenarios import ACTIVE
from schemas.events import normalize_email, partition_key


MAX_AHEAD = timedelta(seconds=60)  # clock skew between the operator's machine and the platform


class RemovalRefused(ValueError):
    """The whole request is refused; nothing was sent."""


@dataclass(frozen=True)
class RemovalResult:
    request_id: str
    removed: list[str]
    not_in_scenario: list[tuple[str, str]]  # (contact as given, why)


def parse_contacts(given: list[str]) -> tuple[list[str], list[int]]:
    if not given:
        raise RemovalRefused("name at least one contact (email or contact id)")
    if len(given) > MAX_CONTACTS_PER_REMOVAL:
        raise RemovalRefused(f"{len(given)} contacts given; at most {MAX_CONTACTS_PER_REMOVAL} per request. "
                             "Nothing was removed: split the list.")
    emails, ids = [], []
    for g in given:
        if g.isdigit():
            ids.append(int(g))
        else:
            try:
                emails.append(normalize_email(g))
            except ValueError as exc:
                raise RemovalRefused(f"{g!r}: neither an email nor a contact id ({exc}). Nothing was removed.")
    return emails, ids


LOOKUP = (
    "SELECT contact_key, email, contact_id, status, scenario_name, step_id, start_id, entered_at, updated_at "
    "FROM {db}.enrollment_state FINAL "
    "WHERE account_id = {account:String} AND scenario_id = {scenario:String} "
    "AND (email IN {emails:Array(String)} OR contact_id IN {ids:Array(UInt64)})"
)


SCENARIO_KNOWN = ("SELECT count() > 0 FROM {db}.enrollment_state "
                  "WHERE account_id = {account:String} AND scenario_id = {scenario:String}")


def _utc(t: datetime | str) -> datetime:
    """A time as ClickHouse gave it (a datetime, or ISO text through the worker's read path), in UTC."""
    if isinstance(t, str):
        t = datetime.fromisoformat(t)
    return t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t.astimezone(timezone.utc)


def plan(given: list[str], rows: list[list], at: datetime | None = None, now: datetime | None = None,
         ) -> tuple[list[dict], list[tuple[str, str]]]:
    """Match what the operator gave with the enrollment rows: who is removed (and when), who is reported.

    A removal is placed after the enrollment's last change: an `at` before it is refused for that contact
    (the log would show a removal the state had already moved past), and "now" is moved just after it
    when the platform's clock runs ahead of this one (a step stamped a few seconds in the future).
    """
    now = now or datetime.now(timezone.utc)
    by_email = {r[1]: r for r in rows if r[1]}
    by_id = {r[2]: r for r in rows if r[2]}
    found, missing, seen = [], [], set()
    for g in given:
        row = by_id.get(int(g)) if g.isdigit() else by_email.get(normalize_email(g))  # as parse_contacts did
        if row is None:
            missing.append((g, "not in this scenario"))
            continue
        if row[3] not in ACTIVE:
            missing.append((g, f"not in this scenario any more ({row[3]})"))
            continue
        if row[0] in seen:
            continue
        changed = _utc(row[8])
        if at is not None and at <= changed:
            missing.append((g, f"its enrollment last changed at {changed.isoformat(timespec='milliseconds')} (step "
                               f"{row[5]}), after the removal time: omit the time to remove it now, or give a later one"))
            continue
        seen.add(row[0])
        when = at or max(now, changed + timedelta(milliseconds=1))
        found.append({"given": g, "email": row[1] or None, "contact_id": row[2] or None, "at": when,
                      "seen": {"scenario_name": row[4], "step_id": row[5], "start_id": row[6],
                               "entered_at": row[7]}})
    return found, missing


Lookup = Callable[[str, dict], Awaitable[list[list]]]


async def remove_contacts(settings: Settings, account: str, scenario: str, given: list[str],
                          at: datetime | None = None, by: str = "", lookup: Lookup | None = None) -> RemovalResult:
    """`lookup` runs a read query (the API passes its own; the CLI goes through the worker or directly)."""
    from streams.produce import publish
    from streams.topics import ensure_topics, topics

    emails, ids = parse_contacts(given)
    now = datetime.now(timezone.utc)
    if at is not None:
        at = _utc(at)
        if at > now + MAX_AHEAD:
            # It would be applied in event-time order: the contact would stay "removed" until then, whatever
            # its scenario does meanwhile (a restart included).
            raise RemovalRefused(f"the removal time {at.isoformat()} is in the future; give now (the default) or "
                                 "an earlier time. Nothing was removed.")
    if lookup is None:
        lookup = _read_query_lookup(settings)
    rows = await lookup(LOOKUP, {"account": account, "scenario": scenario, "emails": emails, "ids": ids})
    found, missing = plan(given, rows, at, now)
    if not rows:  # nobody found: say so if the scenario itself is unknown in this account
        [[enrolled]] = await lookup(SCENARIO_KNOWN, {"account": account, "scenario": scenario})
        if not enrolled:
            from query.views import SCENARIOS_NAMED

            named = [i for i, in await lookup(SCENARIOS_NAMED, {"account": account, "name": scenario})]
            if named:
                raise RemovalRefused(f"{scenario!r} is the name of scenario {', '.join(named)}: give the scenario's "
                                     f"id, e.g. {named[0]!r}. Nothing was removed.")
            raise RemovalRefused(f"scenario {scenario!r} has no contacts in account {account!r}: check both ids "
                                 f"(`autologs logs contacts --account {account} -f status=all` lists who is where). "
                                 "Nothing was removed.")
    request_id = new_request_id()
    messages = []
    for c in found:
        command = RemoveContact(request_id=request_id, account_id=account, scenario_id=scenario, email=c["email"],
                                contact_id=c["contact_id"], requested_at=c["at"], requested_by=by, seen=c["seen"])
        messages.append((partition_key(account, command.email, command.contact_id),
                         orjson.dumps(command.model_dump(mode="json"))))
    if messages:
        await ensure_topics(settings)
        await publish(settings, topics(settings).commands, messages)
    return RemovalResult(request_id, [c["given"] for c in found], missing)


async def outcomes(settings: Settings, account: str, scenario: str, given: list[str], lookup: Lookup | None = None,
                   timeout_s: float = 10.0) -> dict[str, str]:
    """What the worker made of each removal sent: "removed", "exited" (a held exit came first: the removal
    was ignored, nothing written), or "pending" (not applied within `timeout_s`). The tool reads
    enrollment_state, which trails the stream by up to the lateness, so "sent" is not yet "removed"."""
    import asyncio
    import time

    emails, ids = parse_contacts(given)
    lookup = lookup or _read_query_lookup(settings)
    deadline = time.monotonic() + timeout_s
    while True:
        rows = await lookup(LOOKUP, {"account": account, "scenario": scenario, "emails": emails, "ids": ids})
        by_email = {r[1]: r[3] for r in rows if r[1]}
        by_id = {r[2]: r[3] for r in rows if r[2]}
        status = {g: (by_id.get(int(g)) if g.isdigit() else by_email.get(normalize_email(g))) for g in given}
        if all(v not in ACTIVE for v in status.values()) or time.monotonic() > deadline:
            return {g: v if v in ("removed", "exited") else "pending" for g, v in status.items()}
        await asyncio.sleep(0.3)


def _read_query_lookup(settings: Settings) -> Lookup:
    from autologs.processes import read_query

    async def lookup(query: str, parameters: dict) -> list[list]:
        return read_query(settings, query, parameters)[1]

    return lookup
