"""API tokens: only a SHA-256 of each token is stored, so a leaked database leaks no tokens.

Tokens are long random strings (256 bits), so a plain hash is enough: there is nothing to
brute-force, and no salt or slow hash is needed. Looking a token up *by its hash* also means
no secret is ever compared byte by byte, so timing reveals nothing about stored tokens.

The functions here flush but never commit: the caller owns the transaction.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db.models import ROLES, ApiToken
from shared.events import utcnow

# "tr_" lets secret scanners (and people) recognise a thirdring token in a paste or a repo.
TOKEN_PREFIX = "tr_"
# Stored to tell tokens apart in listings: "tr_" and 5 random characters, too few to matter.
PREFIX_CHARS = 8
# last_used_at is advisory; writing it on every request would make each read a write.
LAST_USED_RESOLUTION = timedelta(minutes=1)
# A real token is 3 + 43 characters; anything much longer is not worth hashing.
MAX_TOKEN_CHARS = 256


@dataclass(frozen=True)
class TokenInfo:
    """What may be shown about a token: never the token, never its hash."""

    name: str
    role: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def check_role(role: str) -> str:
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}: use one of {', '.join(ROLES)}")
    return role


def role_allows(role: str, required: str) -> bool:
    """True when ``role`` may do what ``required`` may (viewer < agent < admin).

    An unknown role held by a token allows nothing; an unknown ``required`` is a bug.
    """
    check_role(required)
    if role not in ROLES:
        return False
    return ROLES.index(role) >= ROLES.index(required)


async def create_token(
    session: AsyncSession, name: str, role: str, now: datetime | None = None
) -> str:
    """Create a token and return it; this is the only time the plain token exists.

    A name held by an active token is refused. A name held only by a revoked token is
    reused: the revoked row is replaced (its hash goes with it, so the old token stays dead).
    """
    check_role(role)
    name = name.strip()
    if not name or len(name) > 128:
        raise ValueError("token name must be 1 to 128 characters")
    existing = await session.scalar(select(ApiToken).where(ApiToken.name == name))
    if existing is not None:
        if existing.revoked_at is None:
            raise ValueError(f"a token named {name!r} already exists; revoke it first")
        await session.execute(delete(ApiToken).where(ApiToken.id == existing.id))
        session.expunge(existing)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(
        name=name,
        role=role,
        token_hash=hash_token(token),
        prefix=token[:PREFIX_CHARS],
        created_at=now or utcnow(),
    )
    try:
        # A savepoint: a concurrent create of the same name fails here without spoiling
        # the caller's transaction.
        async with session.begin_nested():
            session.add(row)
    except IntegrityError:
        raise ValueError(f"a token named {name!r} already exists; revoke it first") from None
    return token


async def revoke_token(session: AsyncSession, name: str, now: datetime | None = None) -> bool:
    """Revoke the active token called ``name``; False when there is none (unknown or revoked).

    The row stays, so ``list_tokens`` still shows who had access and until when.
    """
    row = await session.scalar(
        select(ApiToken).where(ApiToken.name == name, ApiToken.revoked_at.is_(None))
    )
    if row is None:
        return False
    row.revoked_at = now or utcnow()
    await session.flush()
    return True


async def list_tokens(session: AsyncSession) -> list[TokenInfo]:
    """All tokens, active and revoked, by name."""
    rows = (await session.scalars(select(ApiToken).order_by(ApiToken.name))).all()
    return [
        TokenInfo(
            name=r.name,
            role=r.role,
            prefix=r.prefix,
            created_at=r.created_at,
            revoked_at=r.revoked_at,
            last_used_at=r.last_used_at,
        )
        for r in rows
    ]


async def authenticate(
    session: AsyncSession, token: str, now: datetime | None = None
) -> ApiToken | None:
    """The active token row for ``token``, or None (unknown, revoked, or malformed).

    Records ``last_used_at`` at most once per LAST_USED_RESOLUTION; the caller commits.
    """
    if not token or len(token) > MAX_TOKEN_CHARS:
        return None
    row = await session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(token)))
    if row is None or row.revoked_at is not None:
        return None
    now = now or utcnow()
    if row.last_used_at is None or now - row.last_used_at >= LAST_USED_RESOLUTION:
        row.last_used_at = now
        await session.flush()
    return row
