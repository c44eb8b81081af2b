"""API keys bound to one account. The secret is shown once; only its SHA-256 is stored."""
from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time

from autologs.clickhouse import ClickHouse

_FORMAT = re.compile(r"^al_([0-9a-f]{12})\.([A-Za-z0-9_-]{20,100})$")
_ACCOUNT = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_key(ch: ClickHouse, account_id: str, label: str = "") -> str:
    if not _ACCOUNT.match(account_id):
        raise ValueError("account ids are 1-64 letters, digits, '.', '_' or '-'")
    key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
    ch.insert("api_keys", [[account_id, key_id, _hash(secret), label, 0, time.time_ns()]],
              ["account_id", "key_id", "secret_hash", "label", "revoked", "version"])
    return f"al_{key_id}.{secret}"


class KeyRing:
    """Resolves a presented key to its account, caching verified keys for a short while."""

    def __init__(self, ch: ClickHouse, ttl_s: float = 30.0):
        self.ch = ch
        self.ttl_s = ttl_s
        self._cache: dict[str, tuple[str, float]] = {}

    def account_for(self, presented: str | None) -> str | None:
        if not presented:
            return None
        m = _FORMAT.match(presented.strip())
        if not m:
            return None
        cached = self._cache.get(presented)
        if cached and cached[1] > time.monotonic():
            return cached[0]
        rows = self.ch.rows("SELECT account_id, secret_hash FROM {db}.api_keys FINAL "
                            "WHERE key_id = {k:String} AND revoked = 0", {"k": m.group(1)})
        for account_id, secret_hash in rows:
            if hmac.compare_digest(secret_hash, _hash(m.group(2))):
                self._cache[presented] = (account_id, time.monotonic() + self.ttl_s)
                return account_id
        return None
