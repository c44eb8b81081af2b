"""API keys bound to one account. The secret is shown once; only its SHA-256 is stored."""
from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time

from autologs.clickhouse import ClickHouse
from schemas.events import ACCOUNT_ID

_FORMAT = re.compile(r"^al_([0-9a-f]{12})\.([A-Za-z0-9_-]{20,100})$")
_ACCOUNT = re.compile(ACCOUNT_ID)


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_key(ch: ClickHouse, account_id: str, label: str = "") -> str:
    if not _ACCOUNT.match(account_id):
        raise ValueError("account ids are 1-64 letters, digits, '.', '_' or '-'")
    key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
    ch.insert("api_keys", [[account_id, key_id, _hash(secret), label, 0, time.time_ns()]],
              ["account_id", "key_id", "secret_hash", "label", "revoked", "version"])
    return f"al_{key_id}.{secret}"


def list_keys(ch: ClickHouse, account_id: str) -> list[dict]:
    """The account's keys (never their secrets), newest first."""
    rows = ch.rows("SELECT key_id, label, created_at, revoked FROM {db}.api_keys FINAL "
                   "WHERE account_id = {a:String} ORDER BY created_at DESC", {"a": account_id})
    return [{"key_id": k, "label": label, "created_at": created.isoformat(timespec="seconds"), "revoked": bool(r)}
            for k, label, created, r in rows]


def revoke_key(ch: ClickHouse, account_id: str, key_id: str) -> str | None:
    """Revoke one key of the account (`key_id`: the part after `al_`, or the whole key): "revoked", "already
    revoked", or None if the account has no such key.

    A newer version of its row with `revoked = 1` (the table keeps the last version of each key)."""
    m = _FORMAT.match(key_id.strip())
    key_id = m.group(1) if m else key_id.strip().removeprefix("al_")
    rows = ch.rows("SELECT secret_hash, label, created_at, revoked FROM {db}.api_keys FINAL "
                   "WHERE account_id = {a:String} AND key_id = {k:String}", {"a": account_id, "k": key_id})
    if not rows:
        return None
    secret_hash, label, created_at, revoked = rows[0]
    if revoked:
        return "already revoked"
    ch.insert("api_keys", [[account_id, key_id, secret_hash, label, created_at, 1, time.time_ns()]],
              ["account_id", "key_id", "secret_hash", "label", "created_at", "revoked", "version"])
    return "revoked"


def is_revoked(ch: ClickHouse, presented: str | None) -> bool:
    """Whether `presented` is a well-formed key whose id was revoked (to say so, rather than "unknown")."""
    m = _FORMAT.match((presented or "").strip())
    return bool(m) and bool(ch.rows("SELECT 1 FROM {db}.api_keys FINAL WHERE key_id = {k:String} AND revoked = 1",
                                    {"k": m.group(1)}))


class KeyRing:
    """Resolves a presented key to its account, caching verified keys for a short while."""

    def __init__(self, ch: ClickHouse, ttl_s: float = 30.0):
        self.ch = ch
        self.ttl_s = ttl_s
        self._cache: dict[str, tuple[str, float]] = {}

    def forget(self) -> None:
        """Drop the cached keys (after a revocation in this process: it applies at once)."""
        self._cache.clear()

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
