"""Fire due deadlines: each becomes one outbox message per channel, exactly once.

Deadlines live in the database, so a restarted alert service picks up where it stopped.
With several replicas, FOR UPDATE SKIP LOCKED (PostgreSQL) hands each due row to one of them.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.alert.notify.payload import alert_payload
from shared.db.models import Case, Deadline, Mention, OutboxMessage, ResponseCycle
from shared.events import utcnow

log = logging.getLogger(__name__)


async def fire_due(
    sessions: async_sessionmaker[AsyncSession],
    channels: list[str],
    now: datetime | None = None,
    batch: int = 200,
) -> int:
    """Fire every pending deadline due by ``now``; returns how many fired."""
    now = now or utcnow()
    stmt = (
        select(Deadline)
        .where(Deadline.status == "pending", Deadline.due_at <= now)
        .order_by(Deadline.due_at)
        .limit(batch)
    )
    async with sessions() as session, session.begin():
        if session.get_bind().dialect.name == "postgresql":
            stmt = stmt.with_for_update(skip_locked=True)
        due = list((await session.scalars(stmt)).all())
        for deadline in due:
            deadline.status = "fired"
            deadline.fired_at = now
            case = await session.get(Case, deadline.case_id)
            cycle = await session.get(ResponseCycle, deadline.cycle_id)
            assert case is not None and cycle is not None
            if deadline.stage == "breach":
                cycle.breached = True
            post = await session.get(Mention, cycle.started_event_id)
            payload = alert_payload(deadline.stage, case, cycle, post, now)
            for channel in channels:
                session.add(
                    OutboxMessage(
                        case_id=case.id,
                        cycle_id=cycle.id,
                        stage=deadline.stage,
                        channel=channel,
                        payload=payload,
                        status="pending",
                        attempts=0,
                        next_attempt_at=now,
                        created_at=now,
                    )
                )
            log.info("fired %s for case %s (cycle %s)", deadline.stage, case.id, cycle.seq)
    return len(due)
