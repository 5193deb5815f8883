"""Periodic routing work: queued cases to members now on duty, quiet incidents closed."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.alert.config import IncidentSettings
from services.alert.routing.assignment import assign_queued
from services.alert.routing.incidents import close_quiet_incidents
from shared.events import utcnow


async def housekeeping(
    sessions: async_sessionmaker[AsyncSession], incidents: IncidentSettings
) -> int:
    """One round; returns 0 so the caller sleeps its interval between rounds."""
    now = utcnow()
    async with sessions() as session, session.begin():
        await assign_queued(session, now)
        await close_quiet_incidents(session, now, incidents)
    return 0
