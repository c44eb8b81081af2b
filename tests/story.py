"""A scripted scenario story and the exact tables it must give (issue: scenario logs)."""
from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

T0 = datetime(2026, 11, 20, 10, 0, tzinfo=timezone.utc)
ACCOUNT = "acct-story"
ANN, BOB, CAT, DAN = "ann@example.com", "bob@example.com", "cat@example.com", "dan@example.com"
IDS = {ANN: 11, BOB: 12, CAT: 13, DAN: 14}
WELCOME = {"automation_id": "sc-welcome", "automation_name": "Welcome series"}
CART = {"automation_id": "sc-cart", "automation_name": "Abandoned cart"}
REMOVAL_AT = T0 + timedelta(minutes=6)


def _ev(n: int, email: str, minutes: float, type_: str, **fields) -> dict:
    ev = {"event_id": f"story-{n:02d}", "account_id": ACCOUNT, "type": type_, "email": email,
          "contact_id": IDS[email], "occurred_at": (T0 + timedelta(minutes=minutes)).isoformat()}
    if not type_.startswith("automation_"):
        ev["ip"] = "198.51.100.4"
    ev.update(fields)
    return ev


def phase_one() -> list[dict]:
    """Everything before the operator removes Bob (in event-time order)."""
    return [
        _ev(1, ANN, 0, "automation_started", **WELCOME, step_id="s1", start_id="e1", entry_points=2),
        _ev(2, ANN, 1, "automation_action", **WELCOME, step_id="s1", action="send_email", message_id="<m-ann-1>",
            template_id=11),
        _ev(3, ANN, 2, "templates_opened", template_id=11, template_name="Welcome", message_id="<m-ann-1>"),
        _ev(4, ANN, 3, "automation_waiting", **WELCOME, step_id="s2", wait_for="1 day",
            wait_until=(T0 + timedelta(days=1, minutes=3)).isoformat()),
        _ev(5, ANN, 4, "form", form_id="f-1", form_name="Newsletter"),
        _ev(6, ANN, 5, "templates_clicked", template_id=11, template_name="Welcome", message_id="<m-ann-1>",
            url="https://shop.example/welcome"),
        _ev(7, ANN, 10, "automation_step_reached", **WELCOME, step_id="s3"),
        _ev(8, ANN, 11, "automation_exited", **WELCOME, step_id="s3", reason="goal_reached"),
        _ev(9, ANN, 12, "page", url="https://shop.example/"),
        _ev(10, BOB, 0, "automation_started", **WELCOME, step_id="s1", start_id="e2", entry_points=2),
        _ev(11, BOB, 2, "automation_waiting", **WELCOME, step_id="s2", wait_for="2 days"),
        _ev(12, BOB, 3, "identify"),
        _ev(13, CAT, 0, "automation_started", **CART, step_id="c1"),
        _ev(14, CAT, 1, "automation_exited", **CART, step_id="c1", reason="condition_not_met"),
        _ev(15, CAT, 2, "automation_restarted", **CART, step_id="c1"),
        _ev(16, CAT, 3, "campaign_opened", campaign_id=501, campaign_name="November sale"),
        _ev(17, CAT, 4, "automation_step_reached", **CART, step_id="c2"),
        _ev(18, DAN, 1, "page", url="https://shop.example/pricing"),
        _ev(19, DAN, 2, "track", event_name="cart_updated"),
    ]


def phase_two() -> list[dict]:
    """After the removal: the engine still sends Bob an email (the peer's bug) and he opens it."""
    return [
        _ev(20, BOB, 7, "automation_action", **WELCOME, step_id="s3", action="send_email", message_id="<m-bob-1>",
            template_id=12),
        _ev(21, BOB, 8, "templates_opened", template_id=12, template_name="Tips", message_id="<m-bob-1>"),
    ]


def interleave(events: list[dict], seed: int, lateness: timedelta) -> list[dict]:
    """Another arrival order: every event delayed by a random amount below the lateness."""
    rng = random.Random(seed)

    def arrival(ev: dict) -> datetime:
        return datetime.fromisoformat(ev["occurred_at"]) + lateness * rng.random() * 0.9

    keyed = [(arrival(ev), rng.random(), ev) for ev in events]
    return [ev for _, _, ev in sorted(keyed, key=lambda k: (k[0], k[1]))]


def m(minutes: float) -> str:
    return (T0 + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%S")


# (scenario_id, occurred_at, email, step_id, start_id, workflow_point, type, message_code, attribution, source)
EXPECTED_SCENARIO_LOG = sorted([
    ("sc-welcome", m(0), ANN, "s1", "e1", "started", "automation_started", "automation_started", "automation", "story-01"),
    ("sc-welcome", m(1), ANN, "s1", "e1", "", "automation_action", "automation_email_sent", "automation", "story-02"),
    ("sc-welcome", m(2), ANN, "s1", "e1", "", "templates_opened", "templates_opened", "message", "story-03"),
    ("sc-welcome", m(3), ANN, "s2", "e1", "", "automation_waiting", "automation_waiting", "automation", "story-04"),
    ("sc-welcome", m(4), ANN, "s2", "e1", "", "form", "form", "enrollment", "story-05"),
    # a click of the email step s1 sent, while Ann waits at s2: logged in the scenario, at the step she is at
    ("sc-welcome", m(5), ANN, "s2", "e1", "", "templates_clicked", "templates_clicked", "message", "story-06"),
    ("sc-welcome", m(10), ANN, "s3", "e1", "", "automation_step_reached", "automation_step_reached", "automation",
     "story-07"),
    ("sc-welcome", m(11), ANN, "s3", "e1", "exited", "automation_exited", "automation_exited", "automation", "story-08"),
    ("sc-welcome", m(0), BOB, "s1", "e2", "started", "automation_started", "automation_started", "automation", "story-10"),
    ("sc-welcome", m(2), BOB, "s2", "e2", "", "automation_waiting", "automation_waiting_for", "automation", "story-11"),
    ("sc-welcome", m(3), BOB, "s2", "e2", "", "identify", "identify", "enrollment", "story-12"),
    ("sc-welcome", m(6), BOB, "s2", "e2", "manually_removed", "automation_removed", "automation_removed",
     "automation", "removal"),
    # the engine still sent Bob an email after his removal: logged, and marked so it can be found
    ("sc-welcome", m(7), BOB, "s3", "e2", "", "automation_action", "automation_email_sent", "after_removal",
     "story-20"),
    # ...and his open of that email is marked the same way: `attribution=after_removal` finds both
    ("sc-welcome", m(8), BOB, "s3", "e2", "", "templates_opened", "templates_opened", "after_removal", "story-21"),
    ("sc-cart", m(0), CAT, "c1", "", "started", "automation_started", "automation_started", "automation", "story-13"),
    ("sc-cart", m(1), CAT, "c1", "", "exited", "automation_exited", "automation_exited", "automation", "story-14"),
    ("sc-cart", m(2), CAT, "c1", "", "restarted", "automation_restarted", "automation_restarted", "automation",
     "story-15"),
    ("sc-cart", m(3), CAT, "c1", "", "", "campaign_opened", "campaign_opened", "enrollment", "story-16"),
    ("sc-cart", m(4), CAT, "c2", "", "", "automation_step_reached", "automation_step_reached", "automation",
     "story-17"),
])

# (scenario_id, email, contact_id, step_id, start_id, status, entered_at, updated_at, exit_reason)
EXPECTED_ENROLLMENTS = sorted([
    ("sc-welcome", ANN, 11, "s3", "e1", "exited", m(0), m(11), "goal_reached"),
    ("sc-welcome", BOB, 12, "s2", "e2", "removed", m(0), m(6), "manually_removed"),
    ("sc-cart", CAT, 13, "c2", "", "active", m(2), m(4), ""),
])

SCENARIO_LOG_QUERY = (
    "SELECT scenario_id, occurred_at, email, step_id, start_id, workflow_point, type, message_code, attribution, "
    "if(source_event_id LIKE 'removal:%', 'removal', source_event_id) AS source "
    "FROM {db}.scenario_log FINAL WHERE account_id = 'acct-story' ORDER BY scenario_id, occurred_at, source"
)
ENROLLMENT_QUERY = (
    "SELECT scenario_id, email, contact_id, step_id, start_id, status, entered_at, updated_at, exit_reason "
    "FROM {db}.enrollment_state FINAL WHERE account_id = 'acct-story' ORDER BY scenario_id, email"
)


def normalize(rows: list[dict]) -> list[tuple]:
    """JSON rows from `autologs sql --format json` as tuples with second-precision times."""
    out = []
    for r in rows:
        out.append(tuple(v[:19].replace(" ", "T") if isinstance(v, str) and len(v) >= 19 and v[4] == "-"
                         and v[10] in "T " else v for v in r.values()))
    return sorted(out)
