"""API keys and per-key rate limits.

Keys come from ``RAYFOLIO_API_KEYS`` (comma-separated ``key`` or
``key:admin``) or the file named by ``RAYFOLIO_API_KEYS_FILE`` (one such
entry per line, ``#`` comments), never from code. Keys are compared in
constant time and never logged; the audit log stores a short hash of them.
"""

from __future__ import annotations

import hmac
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

SCOPES = ("user", "admin")
MIN_KEY_LENGTH = 16


class KeyConfigError(ValueError):
    """Keys that cannot be loaded: names the variable or file and the entry."""


@dataclass(frozen=True)
class ApiKey:
    key: str
    scope: str  # "user" or "admin"

    @property
    def admin(self) -> bool:
        return self.scope == "admin"


def _parse(entries: list[tuple[str, str]]) -> tuple[ApiKey, ...]:
    keys = []
    for where, entry in entries:
        key, _, scope = entry.strip().partition(":")
        scope = scope or "user"
        if scope not in SCOPES:
            raise KeyConfigError(f"{where}: unknown scope {scope!r} (scopes: {', '.join(SCOPES)})")
        if len(key) < MIN_KEY_LENGTH:
            raise KeyConfigError(f"{where}: a key must be at least {MIN_KEY_LENGTH} characters")
        keys.append(ApiKey(key, scope))
    if len({k.key for k in keys}) != len(keys):
        raise KeyConfigError("the same key is listed twice")
    return tuple(keys)


def load_api_keys(environ: Mapping[str, str] = os.environ) -> tuple[ApiKey, ...]:
    """Every configured key; empty when none is configured."""
    entries: list[tuple[str, str]] = []
    inline = environ.get("RAYFOLIO_API_KEYS", "")
    entries += [(f"RAYFOLIO_API_KEYS entry {i + 1}", e) for i, e in enumerate(inline.split(",")) if e.strip()]
    path = environ.get("RAYFOLIO_API_KEYS_FILE")
    if path:
        try:
            lines = Path(path).read_text().splitlines()
        except OSError as err:
            raise KeyConfigError(f"RAYFOLIO_API_KEYS_FILE={path}: cannot read: {err.strerror}") from None
        entries += [(f"{path}, line {n}", line) for n, line in enumerate(lines, 1)
                    if line.strip() and not line.lstrip().startswith("#")]  # fmt: skip
    return _parse(entries)


def find_key(keys: tuple[ApiKey, ...], presented: str) -> ApiKey | None:
    """The key matching ``presented``; every comparison in constant time."""
    found = None
    for k in keys:
        if hmac.compare_digest(k.key.encode(), presented.encode()):
            found = k
    return found


@dataclass
class RateLimiter:
    """A token bucket per key: ``rate`` requests per second, bursts of ``burst``."""

    rate: float
    burst: int
    clock: Callable[[], float] = time.monotonic
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)  # key -> (tokens, at)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def allow(self, key: str) -> tuple[bool, float]:
        """(allowed, seconds until the next request would be)."""
        with self._lock:
            now = self.clock()
            tokens, at = self._buckets.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - at) * self.rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                return True, 0.0
            self._buckets[key] = (tokens, now)
            return False, (1.0 - tokens) / self.rate
