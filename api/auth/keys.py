"""API keys: ``lp_<prefix>_<secret>``, stored as the prefix and a salted PBKDF2 hash.

The prefix (12 hex digits) finds the row; the hash (PBKDF2-HMAC-SHA256, a per-key salt,
``ITERATIONS`` rounds, the parameters stored with it so they can be raised later) proves
the key. The plain key is shown once, when created, and never stored. A verified key is
remembered in memory (as a keyed digest, per process) so that only its first request
pays for the slow hash; revocation still takes effect at once because the row is read on
every request.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, get_args

from sqlalchemy import text
from sqlalchemy.orm import Session

Role = Literal["viewer", "operator", "admin"]
ROLES: tuple[Role, ...] = get_args(Role)
RANK: dict[str, int] = {role: rank for rank, role in enumerate(ROLES)}
ITERATIONS = 200_000
KEY_PATTERN = re.compile(r"^lp_([0-9a-f]{12})_([A-Za-z0-9_-]{32,128})$")
_CACHE_MAX = 4096
# Process-local: the in-memory record of verified keys is useless outside this process.
_PEPPER = secrets.token_bytes(32)
_verified: dict[int, bytes] = {}


@dataclass(frozen=True)
class ApiKey:
    """A stored key, without its hash."""

    id: int
    name: str
    prefix: str
    role: Role
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True)
class NewKey:
    """A key just created: ``secret`` is the whole key, to show once."""

    key: ApiKey
    secret: str


def generate() -> tuple[str, str]:
    """A new key and its prefix."""
    prefix = secrets.token_hex(6)
    return f"lp_{prefix}_{secrets.token_urlsafe(32)}", prefix


def hash_key(key: str, *, iterations: int = ITERATIONS) -> str:
    """``pbkdf2_sha256$<iterations>$<salt hex>$<hash hex>`` of a key."""
    salt = secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", key.encode(), salt, iterations)
    return f"pbkdf2_sha256${iterations}${salt.hex()}${digest.hex()}"


def verify_key(key: str, stored: str) -> bool:
    """True when ``key`` matches the stored hash."""
    try:
        scheme, rounds, salt, digest = stored.split("$")
        if scheme != "pbkdf2_sha256":
            return False
        got = hashlib.pbkdf2_hmac("sha256", key.encode(), bytes.fromhex(salt), int(rounds))
    except ValueError:
        return False
    return hmac.compare_digest(got, bytes.fromhex(digest))


def check_role(role: str) -> Role:
    """``role`` if it is one of viewer, operator, admin (else ValueError naming them)."""
    if role not in RANK:
        raise ValueError(f"role {role!r} is not one of {', '.join(ROLES)}")
    return role  # type: ignore[return-value]


_COLUMNS = "id, name, prefix, role, created_at, last_used_at, revoked_at"


def create_key(session: Session, *, name: str, role: str) -> NewKey:
    """Store a new key (committed) and return it with its secret."""
    name = name.strip()
    if not name or len(name) > 200:
        raise ValueError("the key needs a name of 1-200 characters")
    secret, prefix = generate()
    row = session.execute(
        text(
            f"INSERT INTO api_keys (name, prefix, hash, role) VALUES (:name, :prefix, :hash,"
            f" :role) RETURNING {_COLUMNS}"
        ),
        {"name": name, "prefix": prefix, "hash": hash_key(secret), "role": check_role(role)},
    ).one()
    session.commit()
    return NewKey(key=ApiKey(*row), secret=secret)


def list_keys(session: Session) -> list[ApiKey]:
    """Every key, oldest first."""
    rows = session.execute(text(f"SELECT {_COLUMNS} FROM api_keys ORDER BY id"))
    return [ApiKey(*row) for row in rows]


def revoke_key(session: Session, ident: str) -> ApiKey | None:
    """Revoke a key by id, prefix or name (committed); None when there is no such key."""
    by_id = ident.isdigit() and int(ident) <= 2**31 - 1
    rows = session.execute(
        text(
            "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now())"
            f" WHERE {'id = :id' if by_id else 'prefix = :s OR name = :s'} RETURNING {_COLUMNS}"
        ),
        {"id": int(ident) if by_id else 0, "s": ident},
    ).all()
    if len(rows) > 1:
        session.rollback()
        raise ValueError(f"{len(rows)} keys are named {ident!r}: revoke by id or prefix")
    session.commit()
    return ApiKey(*rows[0]) if rows else None


def authenticate(session: Session, presented: str) -> ApiKey | None:
    """The live key ``presented`` belongs to, or None (malformed, unknown, wrong or revoked)."""
    match = KEY_PATTERN.match(presented)
    if match is None:
        return None
    row = session.execute(
        text(f"SELECT {_COLUMNS}, hash FROM api_keys WHERE prefix = :p"), {"p": match.group(1)}
    ).one_or_none()
    if row is None:
        return None
    key = ApiKey(*row[:-1])
    if key.revoked_at is not None or not _verified_key(key.id, presented, row[-1]):
        return None
    _touch(session, key.id)
    return key


def _verified_key(key_id: int, presented: str, stored: str) -> bool:
    mark = hmac.new(_PEPPER, f"{stored}\0{presented}".encode(), hashlib.sha256).digest()
    known = _verified.get(key_id)
    if known is not None and hmac.compare_digest(known, mark):
        return True
    if not verify_key(presented, stored):
        return False
    if len(_verified) >= _CACHE_MAX:
        _verified.clear()
    _verified[key_id] = mark
    return True


def _touch(session: Session, key_id: int) -> None:
    """Record use, at most once a minute per key (not a write on every request)."""
    result = session.execute(
        text(
            "UPDATE api_keys SET last_used_at = now() WHERE id = :id"
            " AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')"
        ),
        {"id": key_id},
    )
    if getattr(result, "rowcount", 0):
        session.commit()
