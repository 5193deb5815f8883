"""Row-independent locking that works on both databases (replicas, concurrent admins)."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession


def is_postgres(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "postgresql"


async def advisory_lock(session: AsyncSession, key: str) -> None:
    """Serialise replicas on ``key`` until the transaction ends (PostgreSQL only).

    SQLite needs nothing: the engine begins every transaction with BEGIN IMMEDIATE, so
    writers already run one at a time.
    """
    if is_postgres(session):
        await session.execute(select(func.pg_advisory_xact_lock(func.hashtext(key))))
