"""The synthetic workload: valid, deterministic, realistic in shape, coherent journeys. No broker needed."""
from __future__ import annotations

import asyncio
import re
import time
from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone
from itertools import islice

import orjson
import pytest
from click.testing import CliRunner

from processors.validate import RawMessage, validate_batch
from schemas.events import AUTOMATION_TYPES, EVENT_ADAPTER, partition_key
from streams.simulate import SimulationSpec, _Simulation, generate, invalid_samples, run_simulation, simulate_command

# Fixed starts: a spec built twice around midnight would otherwise differ.
_MIDNIGHT = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
SMALL = SimulationSpec(contacts=300, start=_MIDNIGHT - timedelta(days=1))
LARGE = SimulationSpec(contacts=3000, seed=7, start=_MIDNIGHT - timedelta(days=1))


@pytest.fixture(scope="module")
def small() -> list[dict]:
    return list(generate(SMALL))


@pytest.fixture(scope="module")
def large() -> list[dict]:
    return list(generate(LARGE))


def _journeys(events: list[dict]) -> dict[tuple, list[dict]]:
    """Automation events per (account, contact, scenario), in emission order."""
    out: dict[tuple, list[dict]] = defaultdict(list)
    for e in events:
        if e["type"] in AUTOMATION_TYPES:
            out[(e["account_id"], e["contact_id"], e["automation_id"])].append(e)
    return out


def _passages(events: list[dict]) -> list[list[dict]]:
    """Split each contact's scenario history into passages, each opened by automation_started."""
    runs = []
    for history in _journeys(events).values():
        for e in history:
            if e["type"] == "automation_started" or not runs or runs[-1][0] is not history:
                runs.append((history, []))
            runs[-1][1].append(e)
    return [r for _h, r in runs]


def test_every_event_validates_and_is_json_ready(small):
    assert len(small) > 1500  # ~7 events per contact and day
    period_end = SMALL.end
    for e in small:
        assert orjson.loads(orjson.dumps(e)) == e
        ev = EVENT_ADAPTER.validate_python(e)
        assert isinstance(e["occurred_at"], str) and e["occurred_at"].endswith("Z")
        assert len(e["occurred_at"]) == len("2026-11-26T10:11:12.345Z")
        assert SMALL.start <= ev["occurred_at"] < period_end <= datetime.now(timezone.utc)
        assert e["contact_id"] and e["email"]  # every event names its contact both ways
    assert len({e["event_id"] for e in small}) == len(small)
    times = [e["occurred_at"] for e in small]
    assert times == sorted(times)


def test_contacts_are_stable_and_belong_to_one_account(small):
    owner, email = {}, {}
    for e in small:
        assert owner.setdefault(e["contact_id"], e["account_id"]) == e["account_id"]
        assert email.setdefault(e["contact_id"], e["email"]) == e["email"]
    assert len(owner) > 180  # most contacts do something in a day; some are quiet
    assert set(owner.values()) == {"acct-1", "acct-2", "acct-3"}
    assert len({a.rsplit("@", 1)[1] for a in email.values()}) >= 4


def test_same_spec_same_stream_other_seed_other_stream():
    first = list(generate(SMALL))
    assert first == list(generate(SimulationSpec(contacts=300, start=SMALL.start)))
    other = list(generate(SimulationSpec(contacts=300, start=SMALL.start, seed=43)))
    prefix = SimulationSpec(contacts=300, start=SMALL.start, seed=43).id_prefix
    assert prefix.startswith("sim-43-") and [e["event_id"] for e in other][:3] == [f"{prefix}-{n}" for n in range(3)]
    # other options or another day: other ids (they are other events); a shorter stream: the same ids
    assert len({SimulationSpec(contacts=c, start=SMALL.start + timedelta(days=d)).id_prefix
                for c in (300, 301) for d in (0, 1)}) == 4
    assert SimulationSpec(contacts=300, start=SMALL.start, max_events=10).id_prefix == SMALL.id_prefix
    assert [(e["type"], e["occurred_at"]) for e in other] != [(e["type"], e["occurred_at"]) for e in first]


def test_default_start_ends_the_period_at_midnight_in_the_past():
    spec = SimulationSpec(days=2)
    assert spec.end == datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    assert spec.start == spec.end - timedelta(days=2)
    with pytest.raises(ValueError):
        SimulationSpec(start=datetime(2026, 1, 1))  # naive


def test_proportions(large):
    n = len(large)
    share = {t: c / n for t, c in Counter(e["type"] for e in large).items()}
    automation = sum(v for t, v in share.items() if t in AUTOMATION_TYPES)
    bounds = {
        "page": (0.32, 0.44), "track": (0.10, 0.18), "track_link": (0.05, 0.11), "identify": (0.025, 0.055),
        "form": (0.018, 0.04), "list_addition": (0.015, 0.04),
        "campaign_opened": (0.07, 0.13), "campaign_clicked": (0.018, 0.045), "campaign_unsubscribed": (0.0008, 0.006),
        "templates_opened": (0.055, 0.11), "templates_clicked": (0.015, 0.04),
        "templates_unsubscribed": (0.0004, 0.004),
    }
    for t, (lo, hi) in bounds.items():
        assert lo <= share.get(t, 0) <= hi, (t, share.get(t))
    assert 0.06 <= automation <= 0.2
    assert "automation_removed" not in share  # operators' business, not the engine's
    names = Counter(e["event_name"] for e in large if e["type"] == "track")
    assert {"cart_updated", "order_created", "chat_ended"} <= set(names)
    assert all(len(orjson.dumps(e["properties"])) < 300 for e in large if e["type"] == "track")


def test_internal_ratio(large):
    no_ip = sum("ip" not in e for e in large) / len(large)
    assert abs(no_ip - 0.3) < 0.02
    assert all("ip" not in e for e in large if e["type"] in AUTOMATION_TYPES or e["type"] == "list_addition")
    half = list(generate(SimulationSpec(contacts=300, start=SMALL.start, internal_ratio=0.5)))
    assert abs(sum("ip" not in e for e in half) / len(half) - 0.5) < 0.03


def test_journeys_are_coherent(large):
    passages = _passages(large)
    assert len(passages) > 250
    finished, reasons, restarts = 0, Counter(), 0
    for p in passages:
        assert p[0]["type"] == "automation_started", p[0]
        assert p[0]["step_id"] == "s1"
        times = [e["occurred_at"] for e in p]
        assert times == sorted(times) and len(set(times)) == len(times), "time must strictly increase"
        assert len({e["event_id"] for e in p}) == len(p)
        ep = p[0]["entry_points"]
        assert ep in (1, 2)
        assert {e["start_id"] for e in p} == ({""} if ep == 1 else {p[0]["start_id"]})
        if ep == 2:
            assert p[0]["start_id"] in ("e1", "e2")
        assert all(e["type"] != "automation_exited" for e in p[:-1]), "nothing after the exit"
        restarts += sum(e["type"] == "automation_restarted" for e in p)
        for e in p:
            assert e["automation_id"] == f"sc-{e['account_id']}-{e['automation_id'].rsplit('-', 1)[1]}"
            if e["type"] == "automation_action" and e["action"] == "send_email":
                assert e["message_id"].startswith("<") and e["message_id"].endswith("@smtp-relay.example>")
                assert e["template_id"] > 0
            if e["type"] == "automation_waiting":
                assert e["wait_for"] and e["wait_until"] > e["occurred_at"]
        if p[-1]["type"] == "automation_exited":
            finished += 1
            reasons[p[-1]["reason"]] += 1
    unfinished = 1 - finished / len(passages)
    assert 0.2 <= unfinished <= 0.5, unfinished
    assert {"completed", "goal_reached", "condition_not_met"} <= set(reasons)
    assert restarts >= 1
    assert {e["automation_name"] for e in large if e["type"] == "automation_started"} == {
        "Welcome series", "Abandoned cart", "Post-purchase"}


def test_opens_and_clicks_follow_their_send(large):
    sends = {e["message_id"]: e for e in large
             if e["type"] == "automation_action" and e.get("action") == "send_email"}
    attributed = 0
    for e in large:
        if e["type"].startswith("templates_") and e["message_id"] in sends:
            send = sends[e["message_id"]]
            assert send["occurred_at"] < e["occurred_at"]
            assert (send["template_id"], send["contact_id"]) == (e["template_id"], e["contact_id"])
            attributed += 1
            if e["type"] == "templates_clicked":
                assert e["url"].startswith("https://")
    assert attributed > 100
    # Campaign clicks come after an open of the same campaign by the same contact.
    opened: dict[tuple, str] = {}
    for e in large:
        key = (e["contact_id"], e.get("campaign_id"))
        if e["type"] == "campaign_opened":
            opened.setdefault(key, e["occurred_at"])
        elif e["type"] in ("campaign_clicked", "campaign_unsubscribed"):
            assert key in opened and opened[key] < e["occurred_at"], e
            assert e["campaign_name"]


def test_goal_reached_follows_an_order(large):
    orders = defaultdict(list)
    for e in large:
        if e.get("event_name") == "order_created":
            orders[e["contact_id"]].append(e["occurred_at"])
    goals = [e for e in large if e["type"] == "automation_exited" and e["reason"] == "goal_reached"]
    assert goals
    for g in goals:
        assert any(t < g["occurred_at"] for t in orders[g["contact_id"]]), g


def test_max_events_and_bounded_memory():
    spec = SimulationSpec(contacts=200, days=3, start=_MIDNIGHT - timedelta(days=3), max_events=3000)
    assert len(list(generate(spec))) == 3000
    sim = _Simulation(SimulationSpec(contacts=200, days=3, start=_MIDNIGHT - timedelta(days=3)))
    peak = n = 0
    for n, _ in enumerate(sim.run(), 1):
        peak = max(peak, len(sim.heap))
    assert n > 3000
    assert peak < 4 * 200 and peak < n / 4  # pending work scales with contacts, not with events


def test_invalid_samples_are_all_rejected():
    samples = invalid_samples()
    assert len(samples) >= 9 and b"" in samples
    checked = validate_batch([RawMessage("events", 0, i, b"k", v, 0) for i, v in enumerate(samples)])
    assert checked.events == []
    reasons = [why for _m, why in checked.invalid]
    assert len(reasons) == len(samples)
    joined = " | ".join(reasons)
    for expected in ("not valid JSON", "not a JSON object", "unknown event type", "names no contact",
                     "not a valid email", "more than the 50 KB allowed", "in the future", "empty message"):
        assert expected in joined, expected


def _fake_kafka(monkeypatch) -> list[tuple[str, list]]:
    calls: list[tuple[str, list]] = []

    async def ensure_topics(settings, names=None):
        calls.append(("ensure", []))

    async def publish(settings, topic, messages, progress=None, window=20_000):
        batch = list(messages)
        calls.append((topic, batch))
        if progress:
            progress(len(batch))
        return len(batch)

    monkeypatch.setattr("streams.topics.ensure_topics", ensure_topics)
    monkeypatch.setattr("streams.produce.publish", publish)
    return calls


def test_run_simulation_keys_values_and_broken_messages(monkeypatch):
    from autologs.config import Settings

    calls = _fake_kafka(monkeypatch)
    seen = []
    spec = SimulationSpec(contacts=300, start=SMALL.start, max_events=1000)
    sent = asyncio.run(run_simulation(Settings(topic_prefix="simtest"), spec, progress=seen.append,
                                      invalid_every=100))
    assert calls[0][0] == "ensure"
    topic, messages = calls[1]
    assert topic == "simtest.events" and sent == len(messages) == 1010 and sum(seen) == 1010
    expected = list(generate(spec))
    valid = [(k, v) for k, v in messages if k != b"simulate:invalid"]
    assert [orjson.loads(v) for _k, v in valid] == expected
    assert [k for k, _v in valid] == [partition_key(e["account_id"], e["email"], e["contact_id"]) for e in expected]
    broken = [i for i, (k, _v) in enumerate(messages) if k == b"simulate:invalid"]
    assert broken[:2] == [100, 201]  # one after every 100 events
    def untimed(values: list[bytes]) -> list[bytes]:  # the samples are stamped with the second they are made
        return [re.sub(rb'"occurred_at":"[^"]*"', b'"occurred_at":"T"', v) for v in values]

    assert untimed([messages[i][1] for i in broken]) == untimed(invalid_samples()[:10])


def test_run_simulation_holds_the_rate(monkeypatch):
    from autologs.config import Settings

    calls = _fake_kafka(monkeypatch)
    began = time.monotonic()
    sent = asyncio.run(run_simulation(Settings(), SimulationSpec(contacts=300, start=SMALL.start, max_events=600),
                                      rate=400))
    took = time.monotonic() - began
    assert sent == 600
    assert [len(batch) for _t, batch in calls[1:]] == [400, 200]
    assert 1.3 <= took < 5  # 600 events at 400/s: 1.5 s


def test_cli_dry_run_prints_json_lines():
    runner = CliRunner()
    result = runner.invoke(simulate_command, ["--dry-run", "--contacts", "100", "--limit", "250", "--seed", "5"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 250
    events = [EVENT_ADAPTER.validate_json(line) for line in lines]
    assert events[0]["event_id"].startswith("sim-5-") and events[0]["event_id"].endswith("-0")
    assert "250 events" in result.stderr
    again = runner.invoke(simulate_command, ["--dry-run", "--contacts", "100", "--limit", "250", "--seed", "5"])
    assert again.stdout == result.stdout

    broken = runner.invoke(simulate_command,
                           ["--dry-run", "--contacts", "100", "--limit", "100", "--invalid-every", "50"])
    assert broken.exit_code == 0
    assert len(broken.stdout_bytes.split(b"\n")) - 1 == 102


def test_cli_help_and_bad_options():
    runner = CliRunner()
    result = runner.invoke(simulate_command, ["--help"])
    assert result.exit_code == 0
    for option in ("--seed", "--accounts", "--contacts", "--scenarios", "--days", "--rate", "--invalid-every",
                   "--dry-run"):
        assert option in result.output
    assert "deterministic" in result.output
    future = (datetime.now(timezone.utc) + timedelta(days=3)).date().isoformat()
    assert runner.invoke(simulate_command, ["--dry-run", "--start", future]).exit_code == 2
    assert runner.invoke(simulate_command, ["--dry-run", "--contacts", "0"]).exit_code == 2


def test_generation_is_fast_enough():
    spec = SimulationSpec(contacts=5000, start=SMALL.start, max_events=30_000)
    began = time.perf_counter()
    n = sum(len(orjson.dumps(e)) > 0 for e in islice(generate(spec), 30_000))
    rate = n / (time.perf_counter() - began)
    assert n == 30_000 and rate > 20_000, rate  # measured ~100k/s; loose for slow CI machines
