"""Validation experiment: schemas/events.py with cheaper field validators, checked against today's.

python -m bench.experiments.validators [--events 20000]
Builds a variant module from the text of schemas/events.py (same models, same errors) where
  _utc_ms: no astimezone/replace when the value is already UTC with whole milliseconds; the 24-h limit
           computed once per second instead of datetime.now() per event;
  _ip:     canonical dotted-quad IPv4 (what str(ip_address(v)) would return unchanged) accepted by one
           regex match; everything else still goes through ipaddress.ip_address.
Reports µs/event for: today, each change alone, both, both + list[Event] array validation;
and asserts the variant returns equal models for the whole simulated batch.
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import time
import types
from pathlib import Path

FAST_UTC = '''
    @field_validator("occurred_at")
    @classmethod
    def _utc_ms(cls, v: datetime) -> datetime:
        off = v.utcoffset()
        if off is None:
            v = v.replace(tzinfo=timezone.utc)
        elif off:
            v = (v - off).replace(tzinfo=timezone.utc)
        elif v.tzinfo is not timezone.utc:
            v = v.replace(tzinfo=timezone.utc)
        us = v.microsecond
        if us % 1000:
            v = v.replace(microsecond=us - us % 1000)
        if v > _future_limit():
            raise ValueError("occurred_at is more than 24 hours in the future")
        if v < OLDEST:
            raise ValueError("occurred_at is before 2000-01-01")
        return v
'''
FAST_UTC_HELPER = '''
import time as _time
_LIMIT = [0.0, None]


def _future_limit() -> datetime:
    """now + 24 h, recomputed at most once a second (one datetime.now per second, not per event)."""
    t = _time.monotonic()
    if t - _LIMIT[0] >= 1.0 or _LIMIT[1] is None:
        _LIMIT[0], _LIMIT[1] = t, datetime.now(timezone.utc) + MAX_FUTURE + timedelta(seconds=1)
    return _LIMIT[1]
'''
FAST_IP = '''
    @field_validator("ip")
    @classmethod
    def _ip(cls, v: str | None) -> str | None:
        if v is None or v == "":
            return None
        if _IPV4.match(v):
            return v
        try:
            return str(ip_address(v))
        except ValueError:
            raise ValueError(f"not an IP address: {v[:64]!r}") from None
'''
FAST_IP_HELPER = '''
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = re.compile(rf"{_OCTET}(?:\\.{_OCTET}){{3}}\\Z")
'''


def _replace_method(src: str, name: str, new: str) -> str:
    start = src.index(f'    @field_validator("{name}")')
    ends = [src.find(k, start + 10) for k in ("\n    @field_validator", "\n    @model_validator", "\n\n\n")]
    end = min(e for e in ends if e > 0)
    return src[:start] + new.strip("\n") + "\n" + src[end:]


def variant(src: str, utc: bool, ip: bool, name: str) -> types.ModuleType:
    if utc:
        src = _replace_method(src, "occurred_at", FAST_UTC)
        src = src.replace("\nclass Envelope(", FAST_UTC_HELPER + "\n\nclass Envelope(", 1)
    if ip:
        src = _replace_method(src, "ip", FAST_IP)
        src = src.replace("\nclass Envelope(", FAST_IP_HELPER + "\n\nclass Envelope(", 1)
    mod = types.ModuleType(name)
    mod.__dict__["__name__"] = name
    sys.modules[name] = mod
    exec(compile(src, f"<{name}>", "exec"), mod.__dict__)
    return mod


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    import orjson
    from pydantic import TypeAdapter

    import schemas.events as today
    from streams.simulate import SimulationSpec, generate

    src = Path(today.__file__).read_text()
    vals = [orjson.dumps(e) for e in generate(SimulationSpec(contacts=int(args.events * 0.14) + 2000,
                                                             max_events=args.events))]
    n = len(vals)

    def best(fn):
        b = float("inf")
        for _ in range(args.repeat):
            t = time.perf_counter()
            fn()
            b = min(b, time.perf_counter() - t)
        return round(b / n * 1e6, 2)

    ref = [today.EVENT_ADAPTER.validate_json(v) for v in vals]
    out = {"today": best(lambda: [today.EVENT_ADAPTER.validate_json(v) for v in vals])}
    for label, utc, ip in (("fast_utc_ms", True, False), ("fast_ip", False, True), ("both", True, True)):
        m = variant(src, utc, ip, f"events_{label}")
        got = [m.EVENT_ADAPTER.validate_json(v) for v in vals]
        assert [g.model_dump() for g in got] == [r.model_dump() for r in ref], label
        out[label] = best(lambda: [m.EVENT_ADAPTER.validate_json(v) for v in vals])
        if label == "both":
            la = TypeAdapter(list[m.Event])
            arr = lambda: la.validate_json(b"[" + b",".join(vals) + b"]")  # noqa: E731
            assert [g.model_dump() for g in arr()] == [r.model_dump() for r in ref]
            out["both_plus_array"] = best(arr)
    la0 = TypeAdapter(list[today.Event])
    out["array_only"] = best(lambda: la0.validate_json(b"[" + b",".join(vals) + b"]"))
    out["orjson_loads_floor"] = best(lambda: [orjson.loads(v) for v in vals])
    print({k: f"{v} µs/event" for k, v in out.items()})


if __name__ == "__main__":
    main()
