"""API keys: random secrets shown once, stored as SHA-256 hashes, with a scope each.

Keys carry 256 random bits, so a fast hash is enough: there is nothing to brute-force.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from fineloop.errors import NotFound
from fineloop.schemas import ApiKeyCreated, ApiKeyPublic
from fineloop.store.schema import ApiKey

SCOPES = ("ingest", "admin")
COOKIE = "fineloop_key"  # the dashboard login: an admin key in an HttpOnly cookie


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(session: Session, name: str, scope: str, secret: str | None = None) -> ApiKeyCreated:
    """Create a key; `secret` registers a key chosen elsewhere (FINELOOP_API_KEYS)."""
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}")
    key = secret or f"fl_{secrets.token_urlsafe(32)}"
    digest = hash_key(key)
    row = session.scalar(select(ApiKey).where(ApiKey.key_hash == digest))
    if row is None:
        row = ApiKey(
            name=name,
            prefix=key_prefix(key),
            key_hash=digest,
            scope=scope,
            revoked=False,
            created_at=datetime.now(UTC),
        )
        session.add(row)
    else:
        row.scope, row.revoked = scope, False
    session.flush()
    return ApiKeyCreated(**key_public(row).model_dump(), key=key)


def key_prefix(key: str) -> str:
    """The start of a key, to tell keys apart in listings: at most a quarter of it, so a
    short key chosen in FINELOOP_API_KEYS is not stored in the clear."""
    return key[: min(8, len(key) // 4)]


def any_key_exists(session: Session) -> bool:
    """Whether keys are in use. Revoked keys count: revoking the last key must lock the
    server, not open it to everyone."""
    return session.scalar(select(ApiKey.id).limit(1)) is not None


def active_key_count(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(ApiKey).where(~ApiKey.revoked)) or 0


def find_scope(session: Session, key: str) -> str | None:
    """The scope of an active key, or None if the key is unknown or revoked."""
    return find_scope_by_hash(session, hash_key(key))


def find_scope_by_hash(session: Session, digest: str) -> str | None:
    """`find_scope` for a key already hashed (the API's key cache holds only digests)."""
    row = session.scalar(select(ApiKey).where(ApiKey.key_hash == digest, ~ApiKey.revoked))
    return None if row is None else row.scope


def list_keys(session: Session) -> list[ApiKeyPublic]:
    return [key_public(row) for row in session.scalars(select(ApiKey).order_by(ApiKey.id))]


def revoke_key(session: Session, key_id: int) -> ApiKeyPublic:
    row = session.get(ApiKey, key_id)
    if row is None:
        raise NotFound(f"no API key with id {key_id}")
    row.revoked = True
    session.flush()
    return key_public(row)


def key_public(row: ApiKey) -> ApiKeyPublic:
    return ApiKeyPublic(
        id=row.id,
        name=row.name,
        prefix=row.prefix,
        scope=row.scope,
        revoked=row.revoked,
        created_at=row.created_at,
        last_used_at=row.last_used_at,
    )
