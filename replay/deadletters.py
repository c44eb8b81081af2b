"""Inspect dead letters and re-drive them into their source topics, once.

A re-driven message carries the header `autologs-redrive-of: <partition>:<offset>`; if it is still
invalid, its new dead letter carries it too and is never re-driven automatically again (no loop). Every
re-driven letter is recorded in the compacted topic `<prefix>.deadletters.redriven`, so running
`dlq redrive` twice sends nothing twice. Two at once on one machine are serialized by a lock file in the
data dir (the second waits, then finds the letters re-driven): reading that record and adding to it are not
atomic otherwise.
"""
from __future__ import annotations

import asyncio
import contextlib
import fcntl
import time
from datetime import datetime, timezone

from aiokafka import AIOKafkaConsumer
from pydantic import ValidationError

from autologs.config import Settings
from processors.deadletters import H_REDRIVE_OF, DeadLetter, parse_dead_letter
from streams.produce import publish
from streams.topics import ensure_topics, partitions_of, topics


async def _read_all(settings: Settings, topic: str, since: datetime | None = None):
    parts = await partitions_of(settings.kafka_bootstrap, [topic])
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(parts)
        ends = await consumer.end_offsets(parts)
        starts = await consumer.beginning_offsets(parts)
        if since is not None:
            ms = int((since if since.tzinfo else since.replace(tzinfo=timezone.utc)).timestamp() * 1000)
            found = await consumer.offsets_for_times({tp: ms for tp in parts})
            starts = {tp: (found[tp].offset if found[tp] else ends[tp]) for tp in parts}
        todo = {tp for tp in parts if starts[tp] < ends[tp]}
        for tp in parts:
            consumer.seek(tp, starts[tp])
        while todo:
            batch = await consumer.getmany(*todo, timeout_ms=2000)
            for tp, records in batch.items():
                for r in records:
                    if r.offset < ends[tp]:
                        yield r
            for tp in list(todo):
                if await consumer.position(tp) >= ends[tp]:
                    todo.discard(tp)
    finally:
        await consumer.stop()


async def list_letters(settings: Settings, since: datetime | None = None, event_type: str | None = None,
                       unique: bool = True) -> list[DeadLetter]:
    """The dead letters, oldest first. `unique`: one per source message. A worker that stops after sending a
    batch's dead letters but before committing it reads the batch again and sends them again (at least
    once); the copies name the same source topic, partition and offset, and only the first is kept."""
    await ensure_topics(settings)
    letters = [parse_dead_letter(r.headers, r.key, r.value, r.partition, r.offset, r.timestamp)
               async for r in _read_all(settings, topics(settings).dead_letters, since)]
    letters.sort(key=lambda dl: (dl.timestamp_ms, dl.dlq_partition, dl.dlq_offset))  # fetched partition by partition
    if unique:
        first: dict[tuple, DeadLetter] = {}
        for dl in letters:
            first.setdefault((dl.source_topic, dl.source_partition, dl.source_offset), dl)
        letters = list(first.values())
    return [dl for dl in letters if event_type is None or dl.event_type == event_type]


async def redriven_ids(settings: Settings) -> set[str]:
    await ensure_topics(settings)
    return {r.key.decode() async for r in _read_all(settings, topics(settings).redriven) if r.key}


class RedriveRefused(ValueError):
    """Nothing was sent: the request names a letter that cannot take it."""


def _contact_key(letter: DeadLetter, value: bytes, names) -> tuple[bytes | None, str | None]:
    """The key `value` would go with (the contact's, as for any event or command), or why it is invalid."""
    from processors.validate import RawMessage, explain, validate_batch
    from schemas.commands import COMMAND_ADAPTER
    from schemas.events import partition_key

    if letter.source_topic == names.commands:
        try:
            command = COMMAND_ADAPTER.validate_json(value)
        except ValidationError as exc:
            return None, explain(exc)
        return partition_key(command.account_id, command.email, command.contact_id), None
    checked = validate_batch([RawMessage(letter.source_topic, letter.source_partition, letter.source_offset,
                                         letter.key, value, 0)])
    if checked.invalid:
        return None, checked.invalid[0][1]
    ev = checked.events[0][0]
    return partition_key(ev["account_id"], ev["email"], ev["contact_id"]), None


def checked_fix(letter: DeadLetter, value: bytes, names) -> bytes:
    """The key a corrected payload goes with: the contact's (the original key may be wrong, or none).
    Refused with the reason when the payload is still invalid."""
    key, reason = _contact_key(letter, value, names)
    if key is None:
        raise RedriveRefused(f"--fix {letter.id}: the corrected message is still invalid: {reason}. Nothing was sent.")
    return key


@contextlib.asynccontextmanager
async def _one_redrive_at_a_time(settings: Settings, wait_s: float = 60.0):
    path = settings.data_dir / "dlq-redrive.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as lock:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise RedriveRefused(f"another `dlq redrive` has held {path} for over {wait_s:.0f} s; run this "
                                         "one once it has finished. Nothing was sent.") from None
                await asyncio.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


async def redrive(settings: Settings, letters: list[DeadLetter], fixes: dict[str, bytes] | None = None,
                  include_failed_redrives: bool = False, asked: set[str] | None = None,
                  dry_run: bool = False) -> dict:
    """Send letters back to their source topic (fixed payloads where given); each letter only once.

    `asked`: the ids the operator named (with --id or --fix); each must be a letter. A fix must be for a
    letter not re-driven yet, and valid: otherwise nothing is sent. `dry_run`: send nothing, and say of each
    letter that would be sent whether today's schema takes it (`still_invalid`: id -> reason)."""
    async with _one_redrive_at_a_time(settings):
        return await _redrive(settings, letters, fixes or {}, include_failed_redrives, asked, dry_run)


async def _redrive(settings: Settings, letters: list[DeadLetter], fixes: dict[str, bytes],
                   include_failed_redrives: bool, asked: set[str] | None, dry_run: bool) -> dict:
    done = await redriven_ids(settings)
    names = topics(settings)
    known = {dl.id: dl for dl in letters}
    for letter_id in sorted((asked or set()) | set(fixes)):
        if letter_id not in known:
            raise RedriveRefused(f"{letter_id}: no such dead letter (or not in --since/--type); `autologs dlq "
                                 "list` shows their ids. Nothing was sent.")
        if letter_id in fixes and letter_id in done:
            raise RedriveRefused(f"--fix {letter_id}: this letter was re-driven already. If that failed again, "
                                 "its new dead letter (`autologs dlq list`, \"failed again\") is the one to fix. "
                                 "Nothing was sent.")
    # A dry run says which corrections are still invalid, with the others, instead of refusing at the first
    keys = {} if dry_run else {letter_id: checked_fix(known[letter_id], value, names)
                               for letter_id, value in fixes.items()}
    chosen, skipped = [], {"already_redriven": 0, "failed_redrive": 0}
    for dl in letters:
        if dl.id in done:
            skipped["already_redriven"] += 1
        elif dl.redrive_of and not include_failed_redrives and dl.id not in fixes:
            skipped["failed_redrive"] += 1  # re-driven once already and still invalid: no loop
        else:
            chosen.append(dl)
    if dry_run:
        still = {dl.id: reason for dl in chosen
                 if (reason := _contact_key(dl, fixes.get(dl.id, dl.original or b""), names)[1]) is not None}
        return {"redriven": 0, "would_redrive": [dl.id for dl in chosen], "still_invalid": still,
                "fixed": sum(1 for dl in chosen if dl.id in fixes), **skipped}
    by_topic: dict[str, list] = {}
    for dl in chosen:
        target = dl.source_topic if dl.source_topic in (names.events, names.commands) else names.events
        by_topic.setdefault(target, []).append(dl)
    for target, group in by_topic.items():
        await publish(settings, target, [(keys.get(dl.id, dl.key), fixes.get(dl.id, dl.original)) for dl in group],
                      headers_for=lambda i, group=group: [(H_REDRIVE_OF, group[i].id.encode())])
    marks = [(dl.id.encode(), datetime.now(timezone.utc).isoformat().encode()) for dl in chosen]
    if marks:
        await publish(settings, names.redriven, marks)
    return {"redriven": len(chosen), "fixed": sum(1 for dl in chosen if dl.id in fixes), **skipped}
