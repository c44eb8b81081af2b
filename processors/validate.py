"""Turn raw Kafka messages into validated events or dead letters with a reason in words."""
from __future__ import annotations

import asyncio
import logging
import pickle
import socket
import struct
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from typing import NamedTuple

from pydantic import ValidationError

from schemas.events import EVENT_ADAPTER, EVENT_MODELS, Envelope

log = logging.getLogger("autologs.validate")


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


def check_values(values: list[bytes | None]) -> tuple[list[tuple[int, Envelope]], list[tuple[int, str]]]:
    """(index, event) of each valid message value, (index, reason) of each invalid one. Plain data in and out:
    it runs here or in a validation process (`ValidationProcess`)."""
    events: list[tuple[int, Envelope]] = []
    invalid: list[tuple[int, str]] = []
    validate_json = EVENT_ADAPTER.validate_json
    for i, value in enumerate(values):
        if not value:
            invalid.append((i, "empty message"))
            continue
        try:
            events.append((i, validate_json(value)))
        except ValidationError as exc:
            invalid.append((i, explain(exc)))
        except Exception as exc:  # never let one message stop the stream
            invalid.append((i, f"unreadable message: {type(exc).__name__}: {exc}"))
    return events, invalid


def _matched(messages: list[RawMessage], checked: tuple[list, list]) -> Validated:
    events, invalid = checked
    return Validated([(ev, messages[i]) for i, ev in events], [(messages[i], reason) for i, reason in invalid])


def validate_batch(messages: list[RawMessage]) -> Validated:
    return _matched(messages, check_values([m.value for m in messages]))


class ValidationProcess:
    """Validation of whole batches in a child process, while the caller's thread derives the batch before.

    Why: the worker's bound is its event-loop thread and the GIL that thread shares (bench/HISTORY.md), and
    pydantic's validation was the largest part of it (~4 µs per event on the simulate mix). Here that thread
    pays nothing per event: this class's I/O thread unpickles the validated dicts (~0.8 µs per event).
    The same `check_values` runs either way, so the events and reasons are the same. If the child dies, the
    batch is validated here instead and a new child is started: nothing is lost or skipped.

    A socket pair, not a ProcessPoolExecutor: its result pipe is read 64 KB at a time by a Python loop whose
    every turn waits for the GIL the event loop holds (~5 ms each: 2.8 MB of a batch's events took 0.2 s);
    here one `recv_into(..., MSG_WAITALL)` reads a whole answer.
    """

    GIVE_UP_AFTER = 3  # children in a row that died before answering: something kills every one (memory?)
    ANSWER_TIMEOUT_S = 60.0  # a batch takes well under a second there: a child this late is stuck, and replaced

    def __init__(self) -> None:
        self._child = None
        self._socket: socket.socket | None = None
        self._io = ThreadPoolExecutor(1, thread_name_prefix="autologs-validation")  # one batch at a time, in order
        self.restarts = 0
        self._failed_in_a_row = 0
        self.given_up = False  # then every batch is validated here, as with AUTOLOGS_VALIDATION_PROCESSES=0

    def start(self, messages: list[RawMessage]) -> asyncio.Future:
        """Begin validating `messages` there; the future gives their `Validated`."""
        return asyncio.wrap_future(self.submit(messages))

    def submit(self, messages: list[RawMessage]) -> Future:
        """`start` for callers without an event loop running (a quixstreams sink)."""
        values = [m.value for m in messages]
        return self._io.submit(lambda: _matched(messages, self._check_there(values)))

    def _check_there(self, values: list[bytes | None]) -> tuple[list, list]:
        if self.given_up:
            return check_values(values)
        try:
            if self._socket is None:
                self._spawn()
            # A stuck child is killed, and then fails like a dead one. (Not a socket timeout: that makes the
            # socket non-blocking, and MSG_WAITALL then returns part of a large answer.)
            watchdog = threading.Timer(self.ANSWER_TIMEOUT_S, self._child.kill)
            watchdog.daemon = True
            watchdog.start()
            try:
                _send(self._socket, pickle.dumps(values, protocol=pickle.HIGHEST_PROTOCOL))
                checked = pickle.loads(_receive(self._socket))
            finally:
                watchdog.cancel()
        except (OSError, EOFError, pickle.UnpicklingError) as exc:  # the child died (out of memory, a signal) or hung
            self._discard()
            self.restarts += 1
            self._failed_in_a_row += 1
            self.given_up = self._failed_in_a_row >= self.GIVE_UP_AFTER
            log.log(logging.ERROR if self.given_up else logging.WARNING,
                    "the validation process failed (%s: %s); this batch of %d messages is validated in the worker, "
                    "and %s", type(exc).__name__, exc, len(values),
                    f"after {self._failed_in_a_row} failures in a row every batch will be (restart the worker to try "
                    "a validation process again; AUTOLOGS_VALIDATION_PROCESSES=0 does without one)"
                    if self.given_up else "a new validation process is started")
            return check_values(values)
        self._failed_in_a_row = 0
        return checked

    def _spawn(self) -> None:
        ours, theirs = socket.socketpair()
        # spawn, not fork: the worker has threads (Faust's consumer, ClickHouse's), which a fork would copy mid-flight
        child = get_context("spawn").Process(target=_serve, args=(theirs,), name="autologs-validation", daemon=True)
        child.start()
        theirs.close()
        self._child, self._socket = child, ours

    def _discard(self) -> None:
        if self._socket is not None:
            self._socket.close()
        if self._child is not None:
            self._child.kill()
            self._child.join(5)
        self._child = self._socket = None

    def close(self) -> None:
        self._io.submit(self._discard).result()
        self._io.shutdown(wait=True)


_LENGTH = struct.Struct("!Q")


def _send(sock: socket.socket, payload: bytes) -> None:
    sock.sendall(_LENGTH.pack(len(payload)))
    sock.sendall(payload)  # one call: a blocking stream socket sends it all before it returns


def _receive(sock: socket.socket) -> memoryview:
    head = bytearray(_LENGTH.size)
    if sock.recv_into(head, _LENGTH.size, socket.MSG_WAITALL) != _LENGTH.size:
        raise EOFError("the other side closed the connection")
    (size,) = _LENGTH.unpack(head)
    body = bytearray(size)
    if size and sock.recv_into(body, size, socket.MSG_WAITALL) != size:
        raise EOFError("the other side closed the connection mid-message")
    return memoryview(body)


def _serve(sock: socket.socket) -> None:
    """The child: validate each batch it is sent until the worker closes the socket (or dies)."""
    check_values([b"{}"])  # the validators are built before the first batch comes
    while True:
        try:
            values = pickle.loads(_receive(sock))
        except (EOFError, OSError):
            return
        _send(sock, pickle.dumps(check_values(values), protocol=pickle.HIGHEST_PROTOCOL))
