"""The local admin key: lets CLI commands reach a worker that holds the embedded ClickHouse.

The worker writes a random key into its data dir (mode 600) at start; only someone who can read that
file can use the worker's admin pages. Account API keys (reads issue) are separate.
"""
from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path

from autologs.config import Settings

HEADER = "X-Autologs-Admin-Key"


def key_path(settings: Settings) -> Path:
    return settings.data_dir.resolve() / "admin.key"


def create_admin_key(settings: Settings) -> str:
    path = key_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key)
    return key


def read_admin_key(settings: Settings) -> str | None:
    try:
        return key_path(settings).read_text().strip() or None
    except FileNotFoundError:
        return None


def admin_key_matches(settings: Settings, given: str | None) -> bool:
    expected = read_admin_key(settings)
    return bool(expected and given and hmac.compare_digest(expected, given))
