"""What happens to one batch of messages, independent of Faust so that it is tested on its own.

validate -> dead letters (delivered) -> event-log rows -> hold for event-time order -> derive the
scenario log and enrollment state from what is released -> write all rows -> save changed contact
states -> return the messages that may be acknowledged (everything except what is still held).
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any, Awaitable, Callable, Protocol

from pydantic import ValidationError

from autologs.clickhouse import ClickHouse
from autologs.config import Settings
from processors.reorder import ReorderBuffer
from processors.scenarios import (
    CLOSED_MARKS, ENROLLMENT_COLUMNS, SCENARIO_LOG_COLUMNS, Derived, apply_event, dump_state, load_state,
    to_ms,
)
from processors.validate import RawMessage, Validated, ValidationProcess, explain, validate_batch
from schemas.commands import COMMAND_ADAPTER, RemoveContact
from schemas.events import AutomationRemoved, Envelope, contact_key, partition_key
from schemas.rows import EVENT_LOG_COLUMNS, Source, event_log_row
from sinks.clickhouse import ClickHouseSink

log = logging.getLogger("autologs.pipeline")

DeadLetterSender = Callable[[list[tuple[RawMessage, str]]], Awaitable[None]]


class ContactStates(Protocol):
    """Each contact's state (account:contact key -> bytes); published to the partition of its events.

    `remember` makes a batch's changes visible to the next batch at once; `publish` persists them, and is
    called only once the rows derived with them are written.
    """

    def get(self, key: bytes) -> bytes | None: ...

    def remember(self, changed: dict[bytes, tuple[int, bytes]]) -> None: ...

    async def publish(self, changed: dict[bytes, tuple[int, bytes]]) -> None: ...


class DictStates(dict):
    """Contact states in memory (a replay, tests): nothing to publish, the partition does not matter."""

    def remember(self, changed: dict[bytes, tuple[int, bytes]]) -> None:
        for key, (_partition, raw) in changed.items():
            self[key] = raw

    async def publish(self, changed: dict[bytes, tuple[int, bytes]]) -> None:
        pass


@dataclass
class PipelineStats:
    messages: int = 0
    events: int = 0
    dead_letters: int = 0
    commands: int = 0
    scenario_rows: int = 0
    enrollment_changes: int = 0
    late_events: int = 0
    removals_ignored: int = 0  # removal commands for an enrollment already exited or removed


class Held:
    """One valid event (or removal command) waiting for its turn, with the handle to acknowledge.

    Its order and contact key are computed once: a batch sorts and groups by them several times.
    (A plain class: a dataclass's __init__ and __post_init__ are two calls per event.)
    """

    __slots__ = ("event", "source", "token", "command", "order", "contact")

    def __init__(self, event: Envelope | None, source: Source, token: Any, command: RemoveContact | None = None):
        self.event, self.source, self.token = event, source, token
        self.command = command  # becomes its automation_removed event when applied
        if event is not None:
            # (event time in ms, id): the order of derivation; the contact's key (account:contact)
            self.order = (to_ms(event["occurred_at"]), event["event_id"])
            self.contact = partition_key(event["account_id"], event["email"], event["contact_id"])
        else:
            self.order = (to_ms(command.requested_at), _removal_id(command))
            self.contact = partition_key(command.account_id, command.email, command.contact_id)

    def __repr__(self) -> str:
        return f"Held({self.order!r}, {self.contact!r}, {self.source!r})"


_order = attrgetter("order")


def _itself(message: Any) -> Any:
    return message


def _removal_id(command: RemoveContact) -> str:
    return f"removal:{command.request_id}:{contact_key(command.email, command.contact_id)}"


def adopt_seen_enrollment(state: dict, command: RemoveContact) -> None:
    """An enrollment this state does not know, as the removal's sender saw it in enrollment_state: without
    it the removal would be unnamed and unplaced, and the contact's entry time would become the removal's."""
    seen = command.seen
    if seen is None or command.scenario_id in state["enr"]:
        return
    entered = to_ms(seen.entered_at)
    state["enr"][command.scenario_id] = {
        "name": seen.scenario_name, "entry_points": 2 if seen.start_id else 1, "start_id": seen.start_id,
        "step": seen.step_id, "status": "active", "entered_at": entered, "updated_at": entered, "reason": "",
        "wait_until": None, "changes": 0}


@dataclass
class Pipeline:
    settings: Settings
    ch: ClickHouse
    send_dead_letters: DeadLetterSender
    states: ContactStates  # the Faust table in the worker (streams/tables.py); DictStates elsewhere
    commands_topic: str = ""
    table_suffix: str = ""  # a replay writes into shadow tables (event_log__replay, ...)
    on_logged: Callable[[list[list]], None] | None = None  # sees every event-log row batch (replay manifest)
    # False: the event log only (a ranged replay: without every contact's history before the range its
    # scenario log and states would be derived from nothing, and overwrite the right ones)
    derive: bool = True
    stats: PipelineStats = field(default_factory=PipelineStats)

    def __post_init__(self) -> None:
        retry, suffix = self.settings.sink_retry_max_s, self.table_suffix
        # Each table's inserts in a lane of their own: in order per table, the tables side by side. (No engine:
        # a pipeline whose sinks are replaced, in tests and experiments.)
        lane = self.ch.lane if self.ch is not None else lambda: None
        self.event_sink = ClickHouseSink(lane(), "event_log" + suffix, EVENT_LOG_COLUMNS, retry)
        self.scenario_sink = ClickHouseSink(lane(), "scenario_log" + suffix, SCENARIO_LOG_COLUMNS, retry)
        self.enrollment_sink = ClickHouseSink(lane(), "enrollment_state" + suffix, ENROLLMENT_COLUMNS, retry)
        self.held = ReorderBuffer(int(self.settings.scenario_lateness_s * 1000), self.settings.scenario_idle_release_s)
        # Batches and idle releases both touch the contact states: one at a time.
        self.lock = asyncio.Lock()
        self._writes: set[asyncio.Future] = set()  # inserts in flight (kept referenced)
        self._finished: asyncio.Future | None = None  # the last started batch's: batches finish in order
        # The last offset of each events partition that a batch started with: a replay beside this pipeline
        # asks which of its held events this one has read (see `leaves_to_itself`).
        self.read_to: dict[int, int] = {}
        n = self.settings.validation_processes
        self.validation = ValidationProcess() if n else None

    def validate_ahead(self, messages: list[RawMessage]) -> Awaitable[Validated] | None:
        """Start validating a batch in the validation process (`AUTOLOGS_VALIDATION_PROCESSES`) while the batch
        before is derived; pass what this returns to `start` with the same messages. None: no such process (the
        batch is validated in `start`)."""
        if self.validation is None:
            return None
        return self.validation.start(self._split(messages)[1])

    def _split(self, messages: list[RawMessage]) -> tuple[list[RawMessage], list[RawMessage]]:
        """(removal commands, events)"""
        commands_topic = self.commands_topic
        command_messages = [m for m in messages if m.topic == commands_topic] if commands_topic else []
        return command_messages, [m for m in messages if m.topic != commands_topic] if command_messages else messages

    async def handle(self, messages: list[RawMessage], tokens: list[Any] | None = None,
                     validated: Awaitable[Validated] | None = None) -> list[Any]:
        """Process one batch; returns the tokens of the messages that are done (safe to acknowledge)."""
        return await (await self.start(messages, tokens, validated))

    async def start(self, messages: list[RawMessage], tokens: list[Any] | None = None,
                    validated: Awaitable[Validated] | None = None,
                    fetched_at: float | None = None) -> Awaitable[list[Any]]:
        """Validate and derive one batch, and start its inserts. The awaitable returned finishes it: the
        rows written, then the contact states published; it gives the tokens that are done.

        `tokens[i]` is what to acknowledge message i by; without `tokens`, the messages themselves (a Faust
        message is read and acked as it is).

        The next batch may start before this one finishes: it derives from this one's states, which are
        remembered at once. Batches finish in the order they started. `validated`: what `validate_ahead` gave
        for these messages. `fetched_at`: when the newest of them was fetched (`time.monotonic()`), which the
        idle release counts quiet partitions from (`ReorderBuffer.add_many`); default: now.
        """
        checked = await validated if validated is not None else None
        async with self.lock:
            return await self._start(messages, tokens, checked, fetched_at)

    async def release_idle(self, caught_up: Callable[[int, float], bool] | None = None) -> list[Any]:
        """Called periodically: derive what quiet partitions hold (see ReorderBuffer.release_idle). Returns
        tokens to acknowledge."""
        async with self.lock:
            released = self.held.release_idle(caught_up)
            if not released:
                return []
            finish = self._derive_and_write(None, [], released, [])
        return await finish

    async def drain(self, leave: Callable[[Held], bool] | None = None) -> int:
        """Derive everything still held, whatever the watermark (the end of a bounded replay). Held events
        that `leave` picks are dropped instead: a live pipeline beside the replay derives them itself, in
        their order. Returns how many were left."""
        async with self.lock:
            released = [item for p in list(self.held.partitions()) for item in self.held.release(p, force=True)]
            left = 0
            if leave is not None:
                kept = [h for h in released if not leave(h)]
                left, released = len(released) - len(kept), kept
            if not released:
                return left
            finish = self._derive_and_write(None, [], released, [])
        await finish
        return left

    def leaves_to_itself(self) -> Callable[[Held], bool]:
        """Which held events of a replay beside this pipeline it will derive itself: those it holds, and those
        of a partition it has not read that far yet. Others it derived already (perhaps into tables the
        replay has since swapped out), so the replay derives those. A partition it has read nothing of since
        it started counts as derived: deriving an event twice can add a row, leaving it can lose one.
        Call it holding `self.lock`, so that nothing is released meanwhile."""
        held = {h.source for _, h in self.held.items()}
        read_to = dict(self.read_to)

        def leave(h: Held) -> bool:
            return h.source in held or h.source.offset > read_to.get(h.source.partition, h.source.offset)
        return leave

    def forget_partitions(self, partitions: set[int]) -> int:
        """On revocation: what is held of them is unacknowledged, and their new owner reads it again."""
        for p in partitions:
            self.read_to.pop(p, None)
        return self.held.drop_partitions(partitions)

    async def _start(self, messages: list[RawMessage], tokens: list[Any] | None, checked: Validated | None,
                     fetched_at: float | None = None) -> Awaitable[list[Any]]:
        # One pass per message where possible, and no pairs or maps of messages unless tokens are given:
        # everything built here per event is also freed per event.
        if tokens is None:
            token_of = _itself
        else:
            by_id = {id(m): t for m, t in zip(messages, tokens)}
            token_of = lambda m: by_id[id(m)]  # noqa: E731
        command_messages, event_messages = self._split(messages)
        if checked is None:
            checked = validate_batch(event_messages)
        invalid = checked.invalid
        removals: list[Held] = []
        for msg in command_messages:
            try:
                command = COMMAND_ADAPTER.validate_json(msg.value or b"")
            except ValidationError as exc:
                invalid.append((msg, explain(exc)))
                continue
            removals.append(Held(None, Source(msg.topic, msg.partition, msg.offset), token_of(msg), command))
        if invalid:
            for msg, reason in invalid:
                log.info("dead letter %s[%d]@%d: %s", msg.topic, msg.partition, msg.offset, reason)
            await self.send_dead_letters(invalid)
        done = [token_of(m) for m, _ in invalid]
        if not self.derive:
            return await self._log_only(checked.events, removals, done, token_of, len(messages), len(invalid))

        entries, log_rows, read_to = [], [], self.read_to
        new_source = tuple.__new__  # Source(...) runs a Python-level __new__: twice the cost per event
        for ev, m in checked.events:
            src = new_source(Source, (m.topic, m.partition, m.offset))
            h = Held(ev, src, token_of(m))
            entries.append((m.partition, h.order[0], h.order[1], h))
            log_rows.append(event_log_row(ev, src))
            read_to[m.partition] = m.offset
        for m, _ in invalid:  # read too: the idle release waits until everything fetched is read (agents.caught_up)
            if m.topic != self.commands_topic and m.offset > read_to.get(m.partition, -1):
                read_to[m.partition] = m.offset
        self.held.add_many(entries, fetched_at)
        released = [item for p in sorted({e[0] for e in entries}) for item in self.held.release(p)]
        self.stats.messages += len(messages)
        self.stats.events += len(checked.events)
        self.stats.dead_letters += len(invalid)
        self.stats.commands += len(command_messages)
        # The event log does not wait for the derivation (it is what "freshness" measures), and the
        # derivation does not wait for the event log: its insert runs in the ClickHouse thread meanwhile.
        logged = self._spawn(self._write_event_log(log_rows))
        await asyncio.sleep(0)  # the insert is handed to its thread before the derivation takes the loop
        return self._derive_and_write(logged, done, released, removals)

    async def _log_only(self, events: list, removals: list[Held], done: list[Any], token_of, n_messages: int,
                        n_invalid: int) -> Awaitable[list[Any]]:
        """The batch's event-log rows alone; a removal is named from what its sender saw (`seen`)."""
        log_rows = [event_log_row(ev, (m.topic, m.partition, m.offset)) for ev, m in events]
        for r in removals:
            state = load_state(None)
            adopt_seen_enrollment(state, r.command)
            log_rows.append(event_log_row(self._removal_event(r.command, state), r.source))
        self.stats.messages += n_messages
        self.stats.events += len(events)
        self.stats.dead_letters += n_invalid
        self.stats.commands += len(removals)
        write = self._spawn(self._write_event_log(log_rows))
        tokens = done + [token_of(m) for _, m in events] + [r.token for r in removals]

        async def finish() -> list[Any]:
            await write
            return tokens
        return finish()

    def _spawn(self, write: Awaitable[None]) -> asyncio.Future:
        task = asyncio.ensure_future(write)
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)
        return task

    async def _write_event_log(self, log_rows: list[list]) -> None:
        if self.on_logged and log_rows:
            self.on_logged(log_rows)
        await self.event_sink.write(log_rows)

    @staticmethod
    def _removal_event(command: RemoveContact, state: dict) -> AutomationRemoved:
        """The command as the automation event it stands for, named and placed from the contact's state."""
        enr = state["enr"].get(command.scenario_id, {})
        return AutomationRemoved(  # every key, as validation would fill them in
            event_id=_removal_id(command),
            account_id=command.account_id, occurred_at=command.requested_at,
            contact_id=command.contact_id or state["contact_id"] or None,
            email=command.email or state["email"] or None,
            ip=None, message_id=None, template_id=None, campaign_id=None, properties={},
            automation_id=command.scenario_id, automation_name=enr.get("name", ""),
            step_id=enr.get("step", ""), start_id=enr.get("start_id", ""),
            entry_points=enr.get("entry_points", 1), type="automation_removed", removed_by=command.requested_by,
        )

    def _derive_and_write(self, logged: asyncio.Future | None, done: list[Any], released: list[Held],
                          removals: list[Held]) -> Awaitable[list[Any]]:
        """Derive now and start the inserts; the awaitable finishes the batch (see `start`)."""
        log_rows: list[list] = []
        # A removal is a barrier: the contact's held events up to its time are applied first, at once.
        ordered: dict[bytes, list[Held]] = {}
        for h in released:
            ordered.setdefault(h.contact, []).append(h)
        barriers = set()
        for r in removals:
            key = r.contact
            barriers.add(key)
            barrier = self.held.take_contact(r.source.partition, lambda h, key=key: h.contact == key, r.order[0])
            ordered.setdefault(key, []).extend(barrier + [r])
        derived = Derived()
        changed: dict[bytes, tuple[int, bytes]] = {}
        for key, items in ordered.items():
            # In release order, not re-sorted: the reorder buffer decides it per arriving event, so the same
            # messages are applied in the same order whatever batches brought them (an event later than the
            # lateness comes after what was released before it; sorted within its batch, it used to land
            # among them or not depending on the batch: replays of one topic differed by hundreds of rows).
            # A removal is placed by its time among what its batch released of the contact: a barrier.
            if key in barriers:
                items.sort(key=_order)
            state = load_state(self.states.get(key))
            dirty = False
            for h in items:
                if h.command is not None:  # named and placed from the state as it is at that point
                    adopt_seen_enrollment(state, h.command)
                    if state["enr"].get(h.command.scenario_id, {}).get("status") in CLOSED_MARKS:
                        # Already out (a removal sent twice, or one that crossed the contact's exit): a second
                        # "manually removed" would be false. Acknowledged, nothing written.
                        self.stats.removals_ignored += 1
                        continue
                    h.event = self._removal_event(h.command, state)
                    log_rows.append(event_log_row(h.event, h.source))
                dirty |= apply_event(state, h.event, h.source, derived, h.order[0])
            if dirty:  # the state goes where the contact's events are read: their partition
                changed[key] = (items[0].source.partition, dump_state(state))
        self.states.remember(changed)  # the next batch derives from them; they are published once written
        writes = [w for w in (logged,) if w is not None]
        if log_rows:  # the removals' automation_removed events
            writes.append(self._spawn(self._write_event_log(log_rows)))
        writes += [self._spawn(sink.write(rows)) for sink, rows in (
            (self.scenario_sink, derived.scenario_rows), (self.enrollment_sink, derived.enrollment_rows)) if rows]
        self.stats.scenario_rows += len(derived.scenario_rows)
        self.stats.enrollment_changes += len(derived.enrollment_rows)
        self.stats.late_events += derived.late
        tokens = done + [h.token for items in ordered.values() for h in items]
        previous, self._finished = self._finished, asyncio.get_running_loop().create_future()
        return self._finish(writes, changed, tokens, previous, self._finished)

    async def _finish(self, writes: list[asyncio.Future], changed: dict[bytes, tuple[int, bytes]],
                      tokens: list[Any], previous: asyncio.Future | None, finished: asyncio.Future) -> list[Any]:
        # Rows first, contact states after (and after the batch before): a crash in between re-derives
        # the same rows.
        try:
            for write in writes:
                await write
            if previous is not None:
                await asyncio.shield(previous)
            await self.states.publish(changed)
        except BaseException as exc:
            for write in writes:
                write.cancel()
            if not finished.done():
                finished.set_exception(exc if isinstance(exc, Exception) else RuntimeError("batch cancelled"))
                finished.exception()  # retrieved: the caller sees `exc` itself
            raise
        finished.set_result(None)
        return tokens
