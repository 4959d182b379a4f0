"""Bearer-key authentication with scopes, and the first-start admin key."""

from __future__ import annotations

import os
import threading
import time
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
    request; a revocation takes effect within that delay). Unknown keys are never cached,
    so a key created with the CLI works at once.
    """

    def __init__(self, engine: Engine, env_keys: str = "", cache_seconds: float = 2.0) -> None:
        self.engine = engine
        self.env_keys = parse_key_list(env_keys)
        self.cache_seconds = cache_seconds
        self._cache: dict[str, tuple[Principal, float]] = {}
        self._lock = threading.Lock()

    def authenticate(self, key: str) -> Principal | None:
        digest = hash_key(key)
        if digest in self.env_keys:
            return self.env_keys[digest]
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(digest)
        if cached and cached[1] > now:
            return cached[0]
        with self.engine.connect() as conn:
            principal = lookup_key(conn, key)
        with self._lock:
            if principal is None:
                self._cache.pop(digest, None)
            else:
                self._cache[digest] = (principal, now + self.cache_seconds)
        return principal


def ensure_admin_key(engine: Engine, data_dir: Path, env_keys: str) -> str | None:
    """At first start with no keys at all, create an admin key in ``<data_dir>/admin.key``.

    Returns the new key (for printing once) or None when keys already exist.
    """
    if parse_key_list(env_keys):
        return None
    with write_transaction(engine) as conn:
        if count_active_keys(conn) > 0:
            return None
        key = create_key(conn, "admin", "bootstrap-admin")
        data_dir.mkdir(parents=True, exist_ok=True)
        path = data_dir / ADMIN_KEY_FILE
        # Create with mode 0600 from the start: the key is never readable by others.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(key + "\n")
        os.chmod(path, 0o600)
    return key
