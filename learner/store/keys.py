"""API keys: generation, hashing and the thin data access the server and CLI share.

Keys are random 32-byte tokens, so a plain SHA-256 is a sufficient one-way hash (no salt or
slow hash needed, unlike for passwords); only the hash is ever stored.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection, func, insert, select, update

from learner.store.models import KEY_SCOPES, ApiKey

KEY_PREFIX = "ll_"
# Scopes are ordered: each includes the ones before it.
SCOPE_RANK = {scope: rank for rank, scope in enumerate(KEY_SCOPES)}


@dataclass(frozen=True)
class Principal:
    """Who made a request: the key's name and scope."""

    name: str
    scope: str

    def allows(self, required: str) -> bool:
        return SCOPE_RANK[self.scope] >= SCOPE_RANK[required]


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def check_scope(scope: str) -> str:
    if scope not in KEY_SCOPES:
        raise ValueError(f"unknown scope {scope!r}; expected one of {list(KEY_SCOPES)}")
    return scope


def parse_key_list(spec: str) -> dict[str, Principal]:
    """Parse ``LIFELONG_API_KEYS`` (``scope:key,scope:key``) into hash -> principal."""
    keys: dict[str, Principal] = {}
    for i, entry in enumerate(part.strip() for part in spec.split(",")):
        if not entry:
            continue
        scope, sep, key = entry.partition(":")
        if not sep or not key:
            raise ValueError(f"LIFELONG_API_KEYS entry {i + 1} is not of the form scope:key")
        keys[hash_key(key)] = Principal(name=f"env-{i + 1}", scope=check_scope(scope))
    return keys


def create_key(conn: Connection, scope: str, name: str) -> str:
    """Store a new key's hash and return the key itself (shown once, never stored)."""
    key = generate_key()
    conn.execute(insert(ApiKey).values(name=name, key_hash=hash_key(key), scope=check_scope(scope)))
    return key


def lookup_key(conn: Connection, key: str) -> Principal | None:
    row = conn.execute(
        select(ApiKey.name, ApiKey.scope).where(
            ApiKey.key_hash == hash_key(key), ApiKey.revoked_at.is_(None)
        )
    ).first()
    return Principal(name=row.name, scope=row.scope) if row else None


def list_keys(conn: Connection) -> list[ApiKey]:
    rows = conn.execute(select(ApiKey.__table__).order_by(ApiKey.id)).all()
    return [ApiKey(**row._mapping) for row in rows]


def revoke_key(conn: Connection, key_id: int) -> bool:
    result = conn.execute(
        update(ApiKey)
        .where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
        .values(revoked_at=datetime.now(UTC))
    )
    return result.rowcount > 0


def count_active_keys(conn: Connection) -> int:
    return conn.execute(
        select(func.count()).select_from(ApiKey).where(ApiKey.revoked_at.is_(None))
    ).scalar_one()
