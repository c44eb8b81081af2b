"""Scenario log and enrollment state, derived from events applied in event-time order.

Pure logic: one contact's state (a JSON-able dict kept in the Faust table `enrollments`) and one
event in, rows out. The caller (processors.reorder) guarantees event-time order within the allowed
lateness, so the same events always give the same rows and the same state, whatever their arrival
order. Only automation events change the state; each enrollment has its own "applied" mark. An
automation event older than its enrollment's mark ("too late", or a re-delivery) changes only what
event-time order would also have left (`_apply_late`: a late exit or removal still closes); a tracker or
email event older than the contact's newest automation event is
attributed by rule 1 only.

Attribution of tracker and email events (also in the README):
1. the email's `message_id` was sent by a scenario step (automation_action) -> that scenario, at the step
   the contact is at (the sending step once it has left, or when the event comes too late to know);
2. else its `template_id` / `campaign_id` was sent by a step of an enrollment that is still active or
   waiting -> that scenario, at the contact's step;
3. else every enrollment of the contact that is active or waiting, at its current step;
4. else (not enrolled) no scenario-log row.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import orjson

from schemas.events import Envelope, contact_key
from schemas.rows import Source

ACTIVE = ("active", "waiting")
# The attribution of an automation event for an enrollment already closed (it changes nothing): an email the
# engine sent after a manual removal is then found with `attribution = 'after_removal'`.
CLOSED_MARKS = {"removed": "after_removal", "exited": "after_exit"}
# How a scenario-log row is tied to its scenario (the column `attribution`, and the scenarios view's filter).
ATTRIBUTIONS = ("automation", "message", "enrollment", *CLOSED_MARKS.values())
MAX_SENDS = 200  # remembered sends per contact, for attribution of later opens and clicks
# Each enrollment's last step changes ([time, event_id, step, open]): where the contact was when an open or a
# click happened, for one that comes again (a crash re-delivers what followed the last commit) after later
# changes were applied. Re-delivered events come from the last few minutes (the lateness), so a few suffice.
STEP_HISTORY = 10
ALL_TIME = [2**62, ""]  # an enrollment's `blind` mark when no step change of its entry can be read any more

SCENARIO_LOG_COLUMNS = (
    "account_id", "scenario_id", "scenario_name", "occurred_at", "contact_id", "email", "step_id", "start_id",
    "workflow_point", "type", "message_code", "message_params", "attribution", "source_event_id",
    "src_topic", "src_partition", "src_offset",
)
ENROLLMENT_COLUMNS = (
    "account_id", "scenario_id", "contact_key", "contact_id", "email", "scenario_name", "start_id", "step_id",
    "status", "entered_at", "updated_at", "exit_reason", "wait_until", "source_event_id", "version",
)
WORKFLOW_POINT = {
    "automation_started": "started", "automation_restarted": "restarted",
    "automation_exited": "exited", "automation_removed": "manually_removed",
}


def to_ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


def from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc)


@dataclass
class Derived:
    scenario_rows: list[list] = field(default_factory=list)
    enrollment_rows: list[list] = field(default_factory=list)
    late: int = 0


def new_state() -> dict[str, Any]:
    return {"applied": [0, ""], "email": "", "contact_id": 0, "enr": {}, "sends": {}}


def _params(ev: Envelope, sent_name: str = "") -> tuple[str, dict]:
    """The message code and its parameters. `sent_name`: the name the sending step gave the email, for an
    open or a click whose webhook names it only by id ("Opened the email Relance J+1", not "… 12")."""
    t = ev["type"]
    if t == "automation_step_reached":
        return t, {"step": ev.get("step_name") or ev["step_id"]}
    if t == "automation_waiting":
        until, wait_for = ev.get("wait_until"), ev.get("wait_for") or ""
        if until and wait_for:
            return t, {"wait_for": wait_for, "wait_until": until.isoformat()}
        if until:
            return "automation_waiting_until", {"wait_until": until.isoformat()}
        return ("automation_waiting_for", {"wait_for": wait_for}) if wait_for else ("automation_waiting_open", {})
    if t == "automation_action":
        if ev["action"] == "send_email":
            return "automation_email_sent", {"name": str(ev.get("template_name") or ev.get("message_id")
                                                          or ev.get("template_id") or ev.get("campaign_id") or "")}
        return t, {"action": ev["action"], "step": ev["step_id"]}
    if t == "automation_exited":
        return t, {"reason": ev["reason"]}
    if t == "automation_removed":  # who removed the contact: shown in the expanded line (message_params)
        return t, {"by": ev["removed_by"]} if ev.get("removed_by") else {}
    if t in ("automation_started", "automation_restarted", "identify"):
        return t, {}
    if t == "track":
        return t, {"name": ev["event_name"]}
    if t in ("page", "track_link"):
        return t, {"url": ev["url"]}
    if t.startswith("templates_") and not ev.get("template_id"):  # an email sent without a template
        return t, {"name": ev.get("template_name") or sent_name or ev.get("message_id") or ""}
    for name, ident in (("form_name", "form_id"), ("list_name", "list_id"), ("campaign_name", "campaign_id"),
                        ("template_name", "template_id")):
        if ident in ev and ev.get(ident) is not None:
            return t, {"name": ev.get(name) or sent_name or str(ev[ident])}
    return t, {}


def _scenario_row(ev: Envelope, src: Source, scenario_id: str, enr: dict, step_id: str, attribution: str,
                  sent_name: str = "", start_id: str = "", known_id: int = 0) -> list:
    """`start_id`: the entry point the event happened under when it is not the enrollment's current one (an
    automation event that names its own, an open of an email sent before a re-entry). `known_id`: the
    contact's id as its automation events gave it, for an event that names the contact by email only (its
    rows are then found by the contact_id filter like the others)."""
    code, params = _params(ev, sent_name)
    entry_points = enr.get("entry_points", 1)
    start_id = start_id or ev.get("start_id") or enr.get("start_id", "")
    return [
        ev["account_id"], scenario_id, enr.get("name", ""), ev["occurred_at"], ev["contact_id"] or known_id,
        ev["email"] or "",
        step_id, start_id if entry_points > 1 else "", WORKFLOW_POINT.get(ev["type"], ""), ev["type"],
        code, orjson.dumps(params).decode() if params else "", attribution, ev["event_id"], *src,
    ]


def _enrollment_row(state: dict, account_id: str, key: str, scenario_id: str, enr: dict, event_id: str) -> list:
    return [
        account_id, scenario_id, key, state["contact_id"], state["email"], enr["name"],
        enr["start_id"] if enr["entry_points"] > 1 else "", enr["step"], enr["status"],
        from_ms(enr["entered_at"]), from_ms(enr["updated_at"]), enr["reason"],
        from_ms(enr["wait_until"]) if enr.get("wait_until") else None, event_id,
        enr["updated_at"] * 1000 + enr["changes"] % 1000,
    ]


def _message_key(message_id: str) -> str:
    """A Message-ID as the engine and the webhooks may each write it: with or without its angle brackets."""
    return "m:" + message_id.strip().strip("<>")


def _remember_send(state: dict, ev: Envelope, scenario_id: str, enr: dict, t: int, late: bool = False) -> None:
    """[scenario, step, time, the email's name, the entry point, the send's attribution]: an open or a click
    of the email is logged under the same (a send after the removal is followed by opens after it too).
    `late`: the send arrived after newer events of its enrollment; it replaces no send as new or newer (in
    event-time order that one came after it; a re-delivery finds itself)."""
    sends, name = state["sends"], ev.get("template_name") or ""
    start_id = (ev.get("start_id") or enr["start_id"]) if enr.get("entry_points", 1) > 1 else ""
    mark = _after_close(enr, t)
    sent = [scenario_id, ev["step_id"], t, name, start_id, "" if mark == "automation" else mark]
    for key, value in ((_message_key(ev["message_id"] or ""), ev["message_id"]), ("t:" + str(ev["template_id"]),
                       ev["template_id"]), ("c:" + str(ev["campaign_id"]), ev["campaign_id"])):
        if value and not (late and key in sends and (len(sends[key]) < 3 or sends[key][2] >= t)):
            sends[key] = sent
    while len(sends) > MAX_SENDS:
        sends.pop(next(iter(sends)))


def _after_close(enr: dict, t: int) -> str:
    """The attribution of an automation event that changed nothing: `after_removal` / `after_exit` when it
    came after the enrollment was closed, else `automation`. A re-delivery of the event (the "too late"
    path) gets the same as its first delivery while the enrollment stays closed."""
    status = enr.get("status")
    return CLOSED_MARKS[status] if status in CLOSED_MARKS and t > enr["updated_at"] else "automation"


def _apply_automation(state: dict, ev: Envelope, t: int) -> tuple[str, dict, bool]:
    """Update the enrollment; returns (scenario_id, enrollment, changed)."""
    sid = ev["automation_id"]
    enr = state["enr"].get(sid)
    kind = ev["type"]
    name = ev.get("automation_name") or (enr or {}).get("name", "")
    if enr is None:
        enr = {"name": name, "entry_points": ev.get("entry_points", 1), "start_id": ev.get("start_id", ""),
               "step": ev.get("step_id", ""), "status": "", "entered_at": t, "updated_at": t, "reason": "",
               "wait_until": None, "changes": 0}
        state["enr"][sid] = enr
        if kind not in ("automation_started", "automation_restarted"):
            enr["implicit"] = True  # opened by a later event: its entry and entry point are that event's guess
    before = (enr["status"], enr["step"], enr["entered_at"], enr["reason"], enr.get("wait_until"), enr["start_id"])
    enr["name"] = name
    is_open = enr["status"] in ACTIVE
    if kind in ("automation_started", "automation_restarted"):
        enr.update(status="active", step=ev.get("step_id", ""), entered_at=t, reason="", wait_until=None,
                   start_id=ev.get("start_id", ""), entry_points=ev.get("entry_points", 1))
        enr.pop("implicit", None)
        enr.pop("blind", None)  # what came late before this entry says nothing of it (rule 3 reads it from here)
    elif kind in ("automation_step_reached", "automation_action") and (is_open or enr["status"] == ""):
        enr.update(status="active", step=ev["step_id"], wait_until=None)
    elif kind == "automation_waiting" and (is_open or enr["status"] == ""):
        until = ev.get("wait_until")
        enr.update(status="waiting", step=ev["step_id"], wait_until=to_ms(until) if until else None)
    elif kind == "automation_exited" and (is_open or enr["status"] == ""):
        enr.update(status="exited", step=ev.get("step_id") or enr["step"], reason=ev["reason"], wait_until=None)
    elif kind == "automation_removed" and (is_open or enr["status"] == ""):
        enr.update(status="removed", step=ev.get("step_id") or enr["step"], reason="manually_removed",
                   wait_until=None)
    # Anything else (a step after an exit or a removal) changes nothing: only a (re)start re-opens.
    after = (enr["status"], enr["step"], enr["entered_at"], enr["reason"], enr.get("wait_until"), enr["start_id"])
    changed = after != before
    if changed:
        enr["updated_at"] = t
        enr["changes"] += 1
        _record_step(enr, t, ev["event_id"])
    if kind == "automation_action":
        _remember_send(state, ev, sid, enr, t)
    return sid, enr, changed


def apply_event(state: dict, ev: Envelope, src: Source, out: Derived, t: int | None = None) -> bool:
    """Apply one event (in event-time order) to one contact's state; True when the state changed.

    `t` is the event time in ms when the caller has it already (it ordered the events by it).
    """
    if t is None:
        t = to_ms(ev["occurred_at"])
    mark = [t, ev["event_id"]]
    email, contact_id = ev["email"], ev["contact_id"]
    key = contact_key(email, contact_id)
    if ev["type"].startswith("automation_"):
        sid = ev["automation_id"]
        enr = state["enr"].get(sid)
        # Each enrollment keeps its own order: an event of one scenario that arrives after a newer event of
        # another scenario is still applied to its own (states saved before this mark use the contact's).
        if enr is not None and mark <= enr.get("applied", state["applied"]):
            out.late += 1
            known = state["contact_id"]
            if _apply_late(ev, enr, t):
                out.scenario_rows.append(_scenario_row(ev, src, sid, enr, ev["step_id"] or enr["step"], "automation",
                                                       known_id=known))
                out.enrollment_rows.append(_enrollment_row(state, ev["account_id"], key, sid, enr, ev["event_id"]))
                return True
            # Its own row is deterministic (a re-delivery rewrites it, with the step its first pass gave it);
            # the state is not rewound.
            out.scenario_rows.append(_scenario_row(ev, src, sid, enr, ev["step_id"] or enr["step"],
                                                   _after_close(enr, t), known_id=known))
            # In event-time order it moved the enrollment then, which its kept step changes do not show: rule 3
            # cannot read them up to the enrollment's newest event any more (`_open_at`).
            changed = False
            if not any(entry[:2] == mark for entry in enr.get("history", ())):  # not a re-delivered change
                # A late (re)start would also have set the entry point: blind until the next (re)start.
                newest = ALL_TIME if ev["type"] in ("automation_started", "automation_restarted") else \
                    enr.get("applied", mark)
                blind = max(enr.get("blind", mark), newest)
                changed = blind != enr.get("blind")
                enr["blind"] = blind
            # A late send of the current entry is still remembered: the opens and clicks that follow it are its
            # scenario's by rule 1 (they were lost when the send came after the contact's exit).
            if ev["type"] == "automation_action" and t > enr["entered_at"]:
                _remember_send(state, ev, sid, enr, t, late=True)
                changed = True
            return changed
        if mark > state["applied"]:
            state["applied"] = mark
        if email:
            state["email"] = email
        if contact_id:
            state["contact_id"] = contact_id
        sid, enr, changed = _apply_automation(state, ev, t)
        enr["applied"] = mark
        how = "automation" if changed else _after_close(enr, t)  # the engine still acting on a closed one
        out.scenario_rows.append(_scenario_row(ev, src, sid, enr, ev["step_id"] or enr["step"], how,
                                               known_id=state["contact_id"]))
        if changed:
            out.enrollment_rows.append(_enrollment_row(state, ev["account_id"], key, sid, enr, ev["event_id"]))
        return True
    known = state["contact_id"]
    if mark <= state["applied"]:
        # Older than an automation event already applied. Rule 1 does not depend on the enrollments as they
        # are now: an open or a click of an email a step sent before it is that step's, however late it
        # arrives. Rule 3 reads them as they were at the event's time, from their last step changes; rule 2
        # (a template or campaign sent by a step) cannot be told then, so such an event gets rule 1 only.
        out.late += 1
        hit = _sent_by_step(state, ev, t)
        if hit:
            enr = state["enr"][hit[0]]
            out.scenario_rows.append(_scenario_row(ev, src, hit[0], enr, _step_at(enr, mark, hit[1]), _sent_as(hit),
                                                   _sent_name(state, ev), _sent_under(hit), known))
        elif not (ev["template_id"] or ev["campaign_id"]):
            for sid, step in _open_at(state, mark):
                out.scenario_rows.append(_scenario_row(ev, src, sid, state["enr"][sid], step, "enrollment",
                                                       known_id=known))
        return False
    # Tracker and email events read the state and never change it (no table write for them).
    rows = _attribute(state, ev)
    if rows:
        name = _sent_name(state, ev) if ev["message_id"] or ev["template_id"] or ev["campaign_id"] else ""
        for sid, step, how, start_id in rows:
            out.scenario_rows.append(_scenario_row(ev, src, sid, state["enr"][sid], step, how, name, start_id,
                                                   known))
    return False


def _open_at(state: dict, mark: list) -> list[tuple[str, str]]:
    """Rule 3 at `mark`, for an event that comes after newer automation events: the enrollments open then,
    each at its step then, as their last step changes tell (what event-time order would have found). An
    enrollment is left out when that cannot be told: its changes before `mark` are no longer kept, it has
    none (a state from before they were kept), an automation event of it came late since (`blind`: in order
    it would have changed what they show), it was (re)started since (its entry point then is not kept), or
    no start opened it (`implicit`: an earlier exit may still be on its way, and could not close it)."""
    found = []
    for sid, enr in state["enr"].items():
        history = enr.get("history")
        if not history or mark <= enr.get("blind", [0, ""]) or enr["entered_at"] >= mark[0] or "implicit" in enr:
            continue
        before = None
        for entry in reversed(history):
            if entry[:2] <= mark:
                before = entry
                break
        if before is not None and before[3]:
            found.append((sid, before[2]))
    found.sort()
    return found


def _apply_late(ev: Envelope, enr: dict, t: int) -> bool:
    """What an automation event older than its enrollment's newest still changes: what event-time order
    would also have left in place. True when it changed the enrollment.

    An exit or a removal closes the enrollment if it has not been (re)entered since: in order it would have,
    and the events applied after it leave a closed enrollment as it is (only a start re-opens). The
    last-change time only grows, so a row of `enrollment_state` never loses to an older version; the entry
    time is left as it is (a late start does not move it back: the copy sorted by entry,
    enrollment_state_by_entry, relies on an enrollment's entry time only growing with its version).
    """
    kind = ev["type"]
    if kind not in ("automation_exited", "automation_removed") or enr["status"] not in ACTIVE \
            or t < enr["entered_at"]:
        return False
    removed = kind == "automation_removed"
    enr.update(status="removed" if removed else "exited", step=ev.get("step_id") or enr["step"],
               reason="manually_removed" if removed else ev["reason"], wait_until=None)
    enr["updated_at"] = max(enr["updated_at"], t)
    enr["changes"] += 1
    _record_step(enr, t, ev["event_id"])
    # The steps recorded after it changed nothing in event-time order (a closed enrollment stays as it is)
    mark = [t, ev["event_id"]]
    enr["history"] = [entry for entry in enr["history"] if entry[:2] <= mark]
    return True


def _record_step(enr: dict, t: int, event_id: str) -> None:
    entry = [t, event_id, enr["step"], enr["status"] in ACTIVE]
    history = enr.get("history")
    if history is None:
        enr["history"] = [entry]
        return
    history.append(entry)
    if history[-2][:2] > entry[:2]:  # a late change: kept in event-time order
        history.sort()
    if len(history) > STEP_HISTORY:
        del history[0]


def _step_at(enr: dict, mark: list, sending_step: str) -> str:
    """The step an open or a click at `mark` is logged at, as its in-order pass found it: the contact's step
    then if the enrollment was open, else the step that sent the email (also when older than the history)."""
    for entry in reversed(enr.get("history", ())):
        if entry[:2] <= mark:
            return entry[2] if entry[3] else sending_step
    return sending_step


def _sent_by_step(state: dict, ev: Envelope, t: int) -> list | None:
    """Rule 1 alone: the scenario and step whose send (before `t`) carried this email's message id."""
    message_id = ev["message_id"]
    hit = state["sends"].get(_message_key(message_id)) if message_id else None
    if hit and hit[0] in state["enr"] and (len(hit) < 3 or hit[2] <= t):
        return hit
    return None


def _sent_name(state: dict, ev: Envelope) -> str:
    """The name a step gave the email this event is about (by message id, else template or campaign), if any."""
    sends = state["sends"]
    for key, value in ((ev["message_id"] and _message_key(ev["message_id"]), ev["message_id"]),
                       ("t:" + str(ev["template_id"]), ev["template_id"]),
                       ("c:" + str(ev["campaign_id"]), ev["campaign_id"])):
        if value and (hit := sends.get(key)) and len(hit) > 3 and hit[3]:
            return hit[3]
    return ""


def _sent_as(hit: list) -> str:
    """An email's engagement is attributed as its send was: `message`, or the send's after-removal mark."""
    return hit[5] if len(hit) > 5 and hit[5] in CLOSED_MARKS.values() else "message"


def _sent_under(hit: list) -> str:
    return hit[4] if len(hit) > 4 else ""


def _attribute(state: dict, ev: Envelope) -> list[tuple[str, str, str, str]]:
    enr = state["enr"]
    if not enr:
        return []
    sends = state["sends"]
    message_id = ev["message_id"]
    if message_id and (hit := sends.get(_message_key(message_id))) and hit[0] in enr:
        # The step the contact is at (the scenario log's step_id: where the contact was when it happened);
        # once it has left the scenario, the step that sent the email.
        now = enr[hit[0]]
        return [(hit[0], now["step"] if now["status"] in ACTIVE else hit[1], _sent_as(hit), _sent_under(hit))]
    for prefix, value in (("t:", ev["template_id"]), ("c:", ev["campaign_id"])):
        if value and (hit := sends.get(prefix + str(value))) and enr.get(hit[0], {}).get("status") in ACTIVE:
            return [(hit[0], enr[hit[0]]["step"], "message", "")]
    active = [(sid, e["step"], "enrollment", "") for sid, e in enr.items() if e["status"] in ACTIVE]
    active.sort()  # only the open enrollments (usually none or one), not every scenario the contact was in
    return active


def load_state(raw: bytes | None) -> dict:
    return orjson.loads(raw) if raw else new_state()


def dump_state(state: dict) -> bytes:
    return orjson.dumps(state)
