"""Incidents: a burst of similar complaints about one brand (an outage, a refund wave).

Cases of one brand sharing an intent within a window are grouped into one incident once
there are enough of them, so the team handles the cause once instead of case by case.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.alert.cases.timeline import record
from services.alert.config import IncidentSettings
from services.alert.sla.policies import Facts
from shared.db.locks import advisory_lock
from shared.db.models import Case, Incident

# Intents about the customer rather than what went wrong: many customers writing "third time
# I ask" share no cause, so no incident groups by them (routing rules may still match them).
NOT_A_CAUSE = frozenset({"repeat"})


def signature_of(intent: str) -> str:
    return f"intent:{intent}"


def _intents(case: Case) -> list[str]:
    return list((case.intents or {}).get("intents") or [])


def _link(session: AsyncSession, case: Case, incident: Incident, now: datetime) -> None:
    case.incident_id = incident.id
    case.updated_at = now
    record(
        session, case.id, "incident_linked", now, incident=incident.id, signature=incident.signature
    )


async def link_incident(
    session: AsyncSession, case: Case, facts: Facts, settings: IncidentSettings, now: datetime
) -> Incident | None:
    """Link ``case`` (flushed, not yet in an incident) to an incident of its first intent
    that has one or reaches the threshold; None when no intent does.
    """
    if case.incident_id is not None:
        return None
    causes = [intent for intent in facts.intents if intent not in NOT_A_CAUSE]
    if not causes:
        return None
    # Replicas handling cases of one burst at once must not open two incidents. One lock
    # per brand (not per intent): several locks taken in varying order could deadlock.
    await advisory_lock(session, f"thirdring:incidents:{case.brand}")
    since = now - timedelta(seconds=settings.window_seconds)
    for intent in causes:
        signature = signature_of(intent)
        incident = await session.scalar(
            select(Incident)
            .where(
                Incident.brand == case.brand,
                Incident.signature == signature,
                Incident.status == "open",
                Incident.last_seen_at >= since,
            )
            .order_by(Incident.last_seen_at.desc(), Incident.id.desc())
            .limit(1)
            .execution_options(populate_existing=True)
        )
        if incident is not None:
            incident.case_count += 1
            incident.last_seen_at = now
            _link(session, case, incident, now)
            return incident
        recent = await session.scalars(
            select(Case)
            .where(
                Case.brand == case.brand,
                Case.status == "open",
                Case.opened_at >= since,
                Case.incident_id.is_(None),
                Case.id != case.id,
            )
            .order_by(Case.id)
        )
        # JSON containment differs between the databases; the window keeps this list short.
        similar = [c for c in recent if intent in _intents(c)]
        if len(similar) + 1 < settings.threshold:
            continue
        incident = Incident(
            brand=case.brand,
            signature=signature,
            status="open",
            opened_at=now,
            last_seen_at=now,
            case_count=len(similar) + 1,
        )
        session.add(incident)
        await session.flush()  # the cases need its id
        for linked in [*similar, case]:
            _link(session, linked, incident, now)
        return incident
    return None


async def close_quiet_incidents(
    session: AsyncSession, now: datetime, settings: IncidentSettings
) -> int:
    """Close open incidents with no new case for a whole window; returns how many."""
    since = now - timedelta(seconds=settings.window_seconds)
    quiet = await session.scalars(
        select(Incident).where(Incident.status == "open", Incident.last_seen_at < since)
    )
    closed = 0
    for incident in quiet:
        incident.status = "closed"
        closed += 1
    return closed
