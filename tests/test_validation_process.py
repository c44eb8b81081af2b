"""The validation process gives what validation in the worker's thread gives, and survives its child's death."""
from __future__ import annotations

import asyncio
import os
import signal

import orjson

from processors.validate import RawMessage, ValidationProcess, validate_batch
from streams.simulate import SimulationSpec, generate, invalid_samples


def _messages() -> list[RawMessage]:
    values = [orjson.dumps(ev) for ev in generate(SimulationSpec(contacts=200, max_events=600))]
    values[5:5] = invalid_samples()  # every kind of broken message the simulator makes
    values[50:50] = [b"", None, b"\xff\xfe not json", b"[1, 2]"]
    return [RawMessage("t.events", i % 3, i, b"k", v, 1_700_000_000_000 + i) for i, v in enumerate(values)]


def test_the_validation_process_gives_the_events_and_reasons_validation_here_gives():
    messages = _messages()
    expected = validate_batch(messages)
    assert len(expected.invalid) >= len(invalid_samples()) + 4 and len(expected.events) >= 600

    async def run():
        validation = ValidationProcess()
        try:
            return await validation.start(messages)
        finally:
            validation.close()

    got = asyncio.run(run())
    assert got.events == expected.events  # the same dicts, each with its own message
    assert all(a[1] is b[1] for a, b in zip(got.events, expected.events))
    assert got.invalid == expected.invalid
    # the event time keeps the UTC tzinfo the rest of the batch step relies on (timezone.utc itself)
    assert all(ev["occurred_at"].tzinfo is expected.events[0][0]["occurred_at"].tzinfo for ev, _ in got.events)


def test_a_batch_whose_validation_process_died_is_validated_anyway_and_a_new_one_starts():
    messages = _messages()
    expected = validate_batch(messages)

    async def run():
        validation = ValidationProcess()
        try:
            await validation.start(messages[:10])  # the child is up
            child = validation._child.pid  # noqa: SLF001
            os.kill(child, signal.SIGKILL)
            after_kill = await validation.start(messages)
            restarts = validation.restarts
            next_one = await validation.start(messages)
            new_child = validation._child.pid  # noqa: SLF001
            return after_kill, restarts, next_one, child != new_child
        finally:
            validation.close()

    after_kill, restarts, next_one, replaced = asyncio.run(run())
    assert (after_kill.events, after_kill.invalid) == (expected.events, expected.invalid)
    assert (next_one.events, next_one.invalid) == (expected.events, expected.invalid)
    assert restarts == 1 and replaced


def test_children_that_die_every_time_are_given_up_and_validation_goes_on_here(monkeypatch):
    messages = _messages()[:50]
    expected = validate_batch(messages)

    async def run():
        validation = ValidationProcess()
        spawn = validation._spawn  # noqa: SLF001

        def spawn_and_kill():  # a child killed as soon as it starts (as by an out-of-memory killer)
            spawn()
            validation._child.kill()  # noqa: SLF001
            validation._child.join()  # noqa: SLF001

        monkeypatch.setattr(validation, "_spawn", spawn_and_kill)
        try:
            got = [await validation.start(messages) for _ in range(5)]
            return got, validation.restarts, validation.given_up, validation._child  # noqa: SLF001
        finally:
            validation.close()

    got, restarts, given_up, child = asyncio.run(run())
    assert all((g.events, g.invalid) == (expected.events, expected.invalid) for g in got)
    assert restarts == ValidationProcess.GIVE_UP_AFTER and given_up and child is None


def test_a_stuck_child_is_replaced_and_the_batch_validated_here(monkeypatch):
    messages = _messages()[:50]
    expected = validate_batch(messages)
    monkeypatch.setattr(ValidationProcess, "ANSWER_TIMEOUT_S", 1.0)

    async def run():
        validation = ValidationProcess()
        try:
            await validation.start(messages[:5])  # the child is up
            stuck = validation._child.pid  # noqa: SLF001
            os.kill(stuck, signal.SIGSTOP)  # alive, never answering
            got = await validation.start(messages)
            after = await validation.start(messages)
            return got, after, validation.restarts, stuck, validation._child.pid  # noqa: SLF001
        finally:
            validation.close()

    got, after, restarts, stuck, child = asyncio.run(run())
    assert (got.events, got.invalid) == (expected.events, expected.invalid)
    assert (after.events, after.invalid) == (expected.events, expected.invalid)
    assert restarts == 1 and child != stuck
    assert not os.path.exists(f"/proc/{stuck}") or "Z" in open(f"/proc/{stuck}/stat").read().split()[2]


def test_a_batch_as_large_as_the_workers_comes_back_whole():
    """20,000 events (the worker's batch, ~3 MB each way) through the socket pair: no failure, no restart."""
    values = [orjson.dumps(ev) for ev in generate(SimulationSpec(contacts=3000, max_events=20_000))]
    messages = [RawMessage("t.events", i % 4, i, b"k", v, 0) for i, v in enumerate(values)]

    async def run():
        validation = ValidationProcess()
        try:
            return [await validation.start(messages) for _ in range(2)], validation.restarts
        finally:
            validation.close()

    (first, second), restarts = asyncio.run(run())
    assert restarts == 0 and len(first.events) == len(second.events) == 20_000
    assert first.events == second.events
