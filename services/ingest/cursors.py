"""Per-source cursors (and the last polls' health) in the ``source_cursors`` table.

A source's cursor is a JSON object, one entry per feed (``{"tag:acme": "1139…"}``). The
poller saves it only after the page it follows was published, so a restart repeats at most
one page, which the publisher's event-id dedupe drops.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db.models import SourceCursor
from shared.events import utcnow


@dataclass(frozen=True)
class CursorRow:
    source: str
    cursor: dict[str, Any]
    updated_at: datetime
    last_ok_at: datetime | None
    last_error: str | None
    consecutive_failures: int


class CursorStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert

    async def load(self, source: str) -> dict[str, Any]:
        async with self.engine.connect() as conn:
            value = await conn.scalar(
                select(SourceCursor.cursor).where(SourceCursor.source == source)
            )
        return dict(value or {})

    async def save(self, source: str, cursor: dict[str, Any]) -> None:
        now = utcnow()
        stmt = self._insert(SourceCursor).values(
            source=source, cursor=cursor, updated_at=now, consecutive_failures=0
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=[SourceCursor.source],
            set_={"cursor": stmt.excluded.cursor, "updated_at": stmt.excluded.updated_at},
        )
        async with self.engine.begin() as conn:
            await conn.execute(stmt)

    async def record_poll(
        self, source: str, *, ok: bool, error: str | None, consecutive_failures: int
    ) -> None:
        """Remember how the last poll went (``thirdring sources list`` shows it)."""
        now = utcnow()
        values: dict[str, Any] = {
            "last_error": error,
            "consecutive_failures": consecutive_failures,
        }
        if ok:
            values["last_ok_at"] = now
        stmt = self._insert(SourceCursor).values(source=source, cursor={}, updated_at=now, **values)
        stmt = stmt.on_conflict_do_update(index_elements=[SourceCursor.source], set_=values)
        async with self.engine.begin() as conn:
            await conn.execute(stmt)

    async def all(self) -> list[CursorRow]:
        async with self.engine.connect() as conn:
            table = SourceCursor.__table__
            rows = (await conn.execute(select(table).order_by(table.c.source))).all()
        return [
            CursorRow(
                r.source,
                dict(r.cursor or {}),
                r.updated_at,
                r.last_ok_at,
                r.last_error,
                r.consecutive_failures,
            )
            for r in rows
        ]

    async def reset(self, source: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(SourceCursor.__table__.delete().where(SourceCursor.source == source))
