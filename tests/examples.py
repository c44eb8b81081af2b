"""One valid example per event type, and helpers to publish and wait, for integration tests."""
from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import orjson

from schemas.events import EVENT_TYPES, partition_key

BASE = datetime(2026, 11, 20, 9, 0, tzinfo=timezone.utc)

_SPECIFIC: dict[str, dict] = {
    "track": {"event_name": "order_created", "properties": {"order_id": "o-1", "total": 42.5}},
    "track_link": {"url": "https://shop.example/catalog.pdf"},
    "page": {"url": "https://shop.example/pricing", "page_title": "Pricing"},
    "identify": {"properties": {"FIRSTNAME": "Ann"}},
    "form": {"form_id": "f-7", "form_name": "Newsletter signup"},
    "list_addition": {"list_id": "l-3", "list_name": "Customers"},
    "campaign_opened": {"campaign_id": 501, "campaign_name": "November sale"},
    "campaign_clicked": {"campaign_id": 501, "campaign_name": "November sale", "url": "https://shop.example/sale"},
    "campaign_unsubscribed": {"campaign_id": 501, "campaign_name": "November sale"},
    "templates_opened": {"template_id": 12, "template_name": "Order receipt", "message_id": "<r1@relay.example>"},
    "templates_clicked": {"template_id": 12, "template_name": "Order receipt", "message_id": "<r1@relay.example>",
                          "url": "https://shop.example/order/o-1"},
    "templates_unsubscribed": {"template_id": 12, "template_name": "Order receipt",
                               "message_id": "<r1@relay.example>"},
    "automation_started": {"automation_id": "sc-1", "automation_name": "Welcome", "step_id": "s1",
                           "start_id": "e2", "entry_points": 2},
    "automation_restarted": {"automation_id": "sc-1", "automation_name": "Welcome", "step_id": "s1",
                             "start_id": "e1", "entry_points": 2},
    "automation_step_reached": {"automation_id": "sc-1", "automation_name": "Welcome", "step_id": "s2",
                                "step_name": "Send welcome email"},
    "automation_waiting": {"automation_id": "sc-1", "automation_name": "Welcome", "step_id": "s3",
                           "wait_for": "2 days", "wait_until": "2026-11-22T09:00:00Z"},
    "automation_action": {"automation_id": "sc-1", "automation_name": "Welcome", "step_id": "s2",
                          "action": "send_email", "template_id": 12, "message_id": "<w1@relay.example>"},
    "automation_exited": {"automation_id": "sc-1", "automation_name": "Welcome", "step_id": "s4",
                          "reason": "goal_reached"},
    "automation_removed": {"automation_id": "sc-1", "automation_name": "Welcome", "step_id": "s3",
                           "removed_by": "operator@example.com"},
}
assert set(_SPECIFIC) == set(EVENT_TYPES), "add an example for every event type"


def example(event_type: str, n: int = 0, account: str = "acct-1", **over) -> dict:
    ev = {
        "event_id": f"ex-{event_type}-{n}", "account_id": account, "type": event_type,
        "occurred_at": (BASE + timedelta(seconds=n)).isoformat(), "email": f"contact{n}@example.com",
        "contact_id": 1000 + n,
    }
    if not event_type.startswith("automation_"):
        ev["ip"] = "203.0.113.7" if n % 2 == 0 else None
    ev.update(_SPECIFIC[event_type])
    ev.update(over)
    return {k: v for k, v in ev.items() if v is not None}


def keyed(ev: dict) -> tuple[bytes, bytes]:
    return partition_key(ev["account_id"], ev.get("email"), ev.get("contact_id")), orjson.dumps(ev)


async def wait_drained(bootstrap: str, group: str, topic: str, timeout: float = 180.0) -> None:
    """Wait until `group` has committed every offset of `topic` (the worker has written all of it)."""
    from streams.topics import group_lag

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (lag := await group_lag(bootstrap, group, [topic])) > 0:
        if loop.time() > deadline:
            raise AssertionError(f"group {group} not drained: {lag} messages behind on {topic}")
        await asyncio.sleep(0.3)
