"""What the front line does to a case through the API; each change lands in the timeline.

Every action locks the case row (PostgreSQL) so two agents acting at once are serialised.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.alert.cases.service import answer, case_policy, current_cycle
from services.alert.cases.timeline import record
from services.alert.routing.assignment import reassign_to
from services.alert.sla import clock
from shared.db.locks import is_postgres
from shared.db.models import Case, Deadline


class CaseNotFound(LookupError):
    pass


class CaseConflict(ValueError):
    """The action does not fit the case's state (e.g. snoozing an answered case)."""


async def load_case(session: AsyncSession, case_id: int, *, lock: bool = True) -> Case:
    stmt = select(Case).where(Case.id == case_id)
    if lock and is_postgres(session):
        stmt = stmt.with_for_update()
    case = await session.scalar(stmt)
    if case is None:
        raise CaseNotFound(f"case {case_id} does not exist")
    return case


def _require_open(case: Case, action: str) -> None:
    if case.status != "open":
        raise CaseConflict(f"cannot {action} case {case.id}: it is {case.status}")


async def claim(
    session: AsyncSession, case_id: int, actor: str, now: datetime, handle: str | None = None
) -> Case:
    """An agent takes the case (as ``handle``, a team member; default: stays with assignee)."""
    case = await load_case(session, case_id)
    _require_open(case, "claim")
    if handle is not None:
        await reassign_to(session, case, handle, now, actor)
    case.claimed_at = case.updated_at = now
    record(session, case.id, "claimed", now, actor=actor, member=handle)
    return case


async def acknowledge(session: AsyncSession, case_id: int, actor: str, now: datetime) -> Case:
    """Someone is on it: escalation and idle reassignment stop; the SLA clock does not."""
    case = await load_case(session, case_id)
    _require_open(case, "acknowledge")
    case.acknowledged_at = case.updated_at = now
    cycle = await current_cycle(session, case)
    await clock.cancel_pending(session, cycle, stages_like="escalation:%")
    await clock.cancel_pending(session, cycle, stages_like="reassign")
    record(session, case.id, "acknowledged", now, actor=actor)
    return case


async def mark_answered(
    session: AsyncSession,
    case_id: int,
    actor: str,
    now: datetime,
    reply_url: str | None,
    at: datetime | None = None,
) -> Case:
    """The brand answered outside what ingest sees (or before ingest saw it)."""
    case = await load_case(session, case_id)
    _require_open(case, "mark answered")
    cycle = await current_cycle(session, case)
    at = at or now
    if at < cycle.started_at or at > now:
        raise CaseConflict("answered_at must be between the customer's post and now")
    await answer(session, case, cycle, at, reply_url, now, actor=actor)
    return case


async def snooze(
    session: AsyncSession, case_id: int, actor: str, now: datetime, until: datetime
) -> Case:
    """Pause the clock until ``until``; a timer resumes it then."""
    case = await load_case(session, case_id)
    _require_open(case, "snooze")
    if until <= now:
        raise CaseConflict("until must be in the future")
    cycle = await current_cycle(session, case)
    await clock.cancel_pending(session, cycle, stages_like="snooze_end")
    await clock.pause(session, cycle, now)
    case.snoozed_until = until
    case.updated_at = now
    session.add(
        Deadline(
            case_id=case.id,
            cycle_id=cycle.id,
            stage="snooze_end",
            fraction=None,
            due_at=until,
            status="pending",
            fired_at=None,
        )
    )
    record(session, case.id, "snoozed", now, actor=actor, until=until.isoformat())
    return case


async def wait_on_customer(session: AsyncSession, case_id: int, actor: str, now: datetime) -> Case:
    """Pause the clock until the customer writes again (e.g. asked for an order number)."""
    case = await load_case(session, case_id)
    _require_open(case, "wait on the customer for")
    cycle = await current_cycle(session, case)
    await clock.pause(session, cycle, now)
    case.waiting_on_customer = True
    case.updated_at = now
    record(session, case.id, "waiting_on_customer", now, actor=actor)
    return case


async def resume(session: AsyncSession, case_id: int, actor: str, now: datetime) -> Case:
    """End a snooze or a wait early."""
    case = await load_case(session, case_id)
    _require_open(case, "resume")
    cycle = await current_cycle(session, case)
    policy = await case_policy(session, case)
    if cycle.paused_at is None:
        raise CaseConflict(f"case {case.id} is not paused")
    await clock.cancel_pending(session, cycle, stages_like="snooze_end")
    await clock.resume(session, cycle, policy, now)
    case.snoozed_until = None
    case.waiting_on_customer = False
    case.updated_at = now
    record(session, case.id, "resumed", now, actor=actor)
    return case


async def reassign(
    session: AsyncSession, case_id: int, actor: str, now: datetime, handle: str
) -> Case:
    case = await load_case(session, case_id)
    _require_open(case, "reassign")
    await reassign_to(session, case, handle, now, actor)
    case.claimed_at = None
    case.updated_at = now
    return case


async def add_note(
    session: AsyncSession, case_id: int, actor: str, now: datetime, text: str
) -> Case:
    case = await load_case(session, case_id)
    record(session, case.id, "note", now, actor=actor, text=text)
    case.updated_at = now
    return case
