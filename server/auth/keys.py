"""Bearer-key authentication with scopes, and the first-start admin key."""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict, deque
from pathlib import Path

from sqlalchemy import Engine

from learner.store.db import write_transaction
from learner.store.keys import (
    Principal,
    count_active_keys,
    create_key,
    hash_key,
    lookup_key,
    parse_key_list,
)

ADMIN_KEY_FILE = "admin.key"


class Authenticator:
    """Resolves a bearer key to a :class:`Principal`.

    Keys from ``LIFELONG_API_KEYS`` live in memory as hashes; stored keys are looked up in
    the database and trusted for ``cache_seconds`` (so ingestion does not pay a query per
    request; a revocation takes effect within that delay). Unknown keys are cached as misses
    for ``miss_cache_seconds``, so a flood of made-up keys costs one query per key and
    interval, not one per request (a key created with the CLI works after at most that
    delay if it was tried before it existed).
    """

    def __init__(
        self,
        engine: Engine,
        env_keys: str = "",
        cache_seconds: float = 2.0,
        miss_cache_seconds: float = 5.0,
        max_cached: int = 10_000,
    ) -> None:
        self.engine = engine
        self.env_keys = parse_key_list(env_keys)
        self.cache_seconds = cache_seconds
        self.miss_cache_seconds = miss_cache_seconds
        self.max_cached = max_cached
        # digest -> (principal or None for a miss, expiry on the monotonic clock)
        self._cache: OrderedDict[str, tuple[Principal | None, float]] = OrderedDict()
        # digest -> when it last authenticated: such keys bypass the failure throttle
        # (and are still looked up, so revocations apply).
        self._valid_seen: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def cached(self, key: str) -> tuple[bool, Principal | None]:
        """``(known, principal)`` without touching the database: known is False when the
        key must be looked up; a known miss is ``(True, None)``."""
        digest = hash_key(key)
        if digest in self.env_keys:
            return True, self.env_keys[digest]
        with self._lock:
            entry = self._cache.get(digest)
        if entry is not None and entry[1] > time.monotonic():
            return True, entry[0]
        return False, None

    def recently_valid(self, key: str, within: float = 300.0) -> bool:
        """Whether ``key`` authenticated within the last ``within`` seconds."""
        with self._lock:
            seen = self._valid_seen.get(hash_key(key))
        return seen is not None and seen > time.monotonic() - within

    def authenticate(self, key: str) -> Principal | None:
        """The key's principal, from memory or the database (blocking: call off the loop)."""
        known, principal = self.cached(key)
        if known:
            return principal
        with self.engine.connect() as conn:
            principal = lookup_key(conn, key)
        ttl = self.cache_seconds if principal is not None else self.miss_cache_seconds
        digest, now = hash_key(key), time.monotonic()
        with self._lock:
            self._cache[digest] = (principal, now + ttl)
            self._cache.move_to_end(digest)
            if principal is not None:
                self._valid_seen[digest] = now
                self._valid_seen.move_to_end(digest)
            for table in (self._cache, self._valid_seen):  # made-up keys are unbounded
                while len(table) > self.max_cached:
                    table.popitem(last=False)
        return principal


class FailureLimiter:
    """Failed authentications per client address in a sliding window.

    An address with ``limit`` failures within ``window`` seconds is throttled: its requests
    with keys not known to be valid get 429 before any database lookup, until the oldest
    failure leaves the window. Keys that authenticated recently are never throttled, so a
    valid client behind the same address as an attacker keeps working.
    """

    def __init__(self, limit: int = 20, window: float = 10.0, max_addresses: int = 10_000):
        self.limit = limit
        self.window = window
        self.max_addresses = max_addresses
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def retry_after(self, address: str) -> float:
        """Seconds until ``address`` may try again (0: not throttled)."""
        now = time.monotonic()
        with self._lock:
            times = self._failures.get(address)
            if not times:
                return 0.0
            while times and times[0] <= now - self.window:
                times.popleft()
            if len(times) < self.limit:
                return 0.0
            return times[0] + self.window - now

    def failed(self, address: str) -> None:
        with self._lock:
            times = self._failures.setdefault(address, deque(maxlen=self.limit))
            times.append(time.monotonic())
            self._failures.move_to_end(address)
            while len(self._failures) > self.max_addresses:
                self._failures.popitem(last=False)


def ensure_admin_key(engine: Engine, data_dir: Path, env_keys: str) -> str | None:
    """At first start with no keys at all, create an admin key in ``<data_dir>/admin.key``.

    Returns the new key (for printing once) or None when keys already exist. The caller
    holds the first-start lock (see :func:`server.api.app.prepare_database`), so two processes
    starting together mint one key; the file is written only after the row committed, and
    never through a symbolic link.
    """
    if parse_key_list(env_keys):
        return None
    with write_transaction(engine) as conn:
        if count_active_keys(conn) > 0:
            return None
        key = create_key(conn, "admin", "bootstrap-admin")
    write_admin_key(data_dir, key)
    return key


def write_admin_key(data_dir: Path, key: str) -> None:
    """Write ``admin.key`` (mode 0600 from the start) atomically, refusing symlinks."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / ADMIN_KEY_FILE
    tmp = data_dir / f".{ADMIN_KEY_FILE}.{os.getpid()}.tmp"
    # O_EXCL | O_NOFOLLOW: a planted file or link at the temporary name fails the write
    # instead of redirecting the key; rename replaces a link at the final name, never
    # writes through it.
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(tmp, flags, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(key + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
