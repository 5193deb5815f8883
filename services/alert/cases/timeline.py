"""The case timeline: every change to a case, with who made it and when."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db.models import CaseEvent

SYSTEM = "system"


def record(
    session: AsyncSession,
    case_id: int,
    kind: str,
    at: datetime,
    *,
    actor: str = SYSTEM,
    **data: Any,
) -> None:
    """Add an entry; the caller's transaction commits it with the change it describes."""
    session.add(CaseEvent(case_id=case_id, at=at, actor=actor, kind=kind, data=data))


async def timeline(session: AsyncSession, case_id: int) -> list[CaseEvent]:
    rows = await session.scalars(
        select(CaseEvent).where(CaseEvent.case_id == case_id).order_by(CaseEvent.id)
    )
    return list(rows)
