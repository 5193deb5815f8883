"""Who in the team works on a case: round robin over the members on duty.

On duty means an active agent or lead, inside the team's working hours, holding fewer
open cases than the team's capacity. Managers are escalation targets, never assignees.
An assignee who neither claims nor acknowledges in time loses the case to the next one.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.alert.cases.timeline import SYSTEM, record
from services.alert.sla.calendars import Calendar
from shared.db.locks import is_postgres
from shared.db.models import Case, Deadline, ResponseCycle, Team, TeamMember

ASSIGNABLE_ROLES = ("agent", "lead")
REASSIGN_STAGE = "reassign"


async def on_duty(
    session: AsyncSession, team: Team, now: datetime, *, lock: bool = False
) -> list[TeamMember]:
    """Members who can take a case at ``now``, by id.

    ``lock`` takes the member rows FOR UPDATE on PostgreSQL: the capacity count below is
    then read after any other replica's assignment to these members has committed.
    """
    if not team.active:
        return []
    if team.calendar is not None and not Calendar.model_validate(team.calendar).is_open(now):
        return []
    stmt = (
        select(TeamMember)
        .where(
            TeamMember.team_id == team.id,
            TeamMember.active.is_(True),
            TeamMember.role.in_(ASSIGNABLE_ROLES),
        )
        .order_by(TeamMember.id)
    )
    if lock and is_postgres(session):
        # populate_existing: objects already in the session must show the locked rows.
        stmt = stmt.with_for_update().execution_options(populate_existing=True)
    members = list(await session.scalars(stmt))
    if team.capacity is None or not members:
        return members
    counts = await session.execute(
        select(Case.assignee_id, func.count())
        .where(Case.status == "open", Case.assignee_id.in_([m.id for m in members]))
        .group_by(Case.assignee_id)
    )
    held = {assignee_id: n for assignee_id, n in counts}
    return [m for m in members if held.get(m.id, 0) < team.capacity]


def _next_in_turn(members: list[TeamMember], now: datetime) -> TeamMember | None:
    """The member assigned longest ago; never-assigned ones first; ties by id."""
    return min(
        members,
        key=lambda m: (m.last_assigned_at is not None, m.last_assigned_at or now, m.id),
        default=None,
    )


async def _pick(
    session: AsyncSession, team: Team, now: datetime, exclude: Collection[int]
) -> TeamMember | None:
    candidates = [m for m in await on_duty(session, team, now, lock=True) if m.id not in exclude]
    return _next_in_turn(candidates, now)


async def _schedule_reassign(
    session: AsyncSession, case: Case, team: Team, now: datetime, *, assigned: bool
) -> None:
    """(Re)arm the case's reassign timer, or cancel it when there is nobody to chase.

    One row per cycle (unique cycle_id + stage), so a later assignment moves the timer
    instead of adding another.
    """
    cycle_id = await session.scalar(
        select(ResponseCycle.id).where(
            ResponseCycle.case_id == case.id, ResponseCycle.seq == case.cycles
        )
    )
    if cycle_id is None:
        return
    deadline = await session.scalar(
        select(Deadline).where(Deadline.cycle_id == cycle_id, Deadline.stage == REASSIGN_STAGE)
    )
    if not assigned or not team.reassign_after_seconds:
        if deadline is not None and deadline.status == "pending":
            deadline.status = "cancelled"
        return
    due_at = now + timedelta(seconds=team.reassign_after_seconds)
    if deadline is None:
        session.add(
            Deadline(
                case_id=case.id,
                cycle_id=cycle_id,
                stage=REASSIGN_STAGE,
                fraction=None,
                due_at=due_at,
                status="pending",
            )
        )
    else:
        deadline.due_at, deadline.status, deadline.fired_at = due_at, "pending", None


async def _give(
    session: AsyncSession, case: Case, team: Team, member: TeamMember, now: datetime
) -> None:
    case.team_id, case.assignee_id, case.assigned_at = team.id, member.id, now
    case.updated_at = now
    member.last_assigned_at = now
    await _schedule_reassign(session, case, team, now, assigned=True)


async def assign(
    session: AsyncSession,
    case: Case,
    team: Team,
    now: datetime,
    *,
    exclude: Collection[int] = frozenset(),
    actor: str = SYSTEM,
) -> TeamMember | None:
    """Give the case to the next member on duty, or queue it in the team (returns None).

    ``case`` must be flushed (it needs an id for the timeline).
    """
    member = await _pick(session, team, now, exclude)
    if member is None:
        case.team_id, case.assignee_id, case.updated_at = team.id, None, now
        await _schedule_reassign(session, case, team, now, assigned=False)
        record(
            session,
            case.id,
            "queued",
            now,
            actor=actor,
            team=team.name,
            reason=_why_nobody(team, now),
        )
        return None
    await _give(session, case, team, member, now)
    record(session, case.id, "assigned", now, actor=actor, member=member.handle, team=team.name)
    return member


def _why_nobody(team: Team, now: datetime) -> str:
    if not team.active:
        return "team inactive"
    if team.calendar is not None and not Calendar.model_validate(team.calendar).is_open(now):
        return "outside working hours"
    return "no member available"


async def reassign_if_idle(session: AsyncSession, case: Case, now: datetime) -> TeamMember | None:
    """On a "reassign" deadline: move an untouched open case to the next member.

    A claimed or acknowledged case stays put. With nobody else on duty the case also stays
    with its assignee (taking it away would leave it with no one) and the skip is recorded.
    """
    if case.status != "open" or case.claimed_at is not None or case.acknowledged_at is not None:
        return None
    if case.team_id is None:
        return None
    team = await session.get(Team, case.team_id)
    assert team is not None
    current = await session.get(TeamMember, case.assignee_id) if case.assignee_id else None
    member = await _pick(session, team, now, {current.id} if current else set())
    seconds = team.reassign_after_seconds or (
        (now - case.assigned_at).total_seconds() if case.assigned_at else 0.0
    )
    reason = f"no action within {seconds:g} s"
    if member is None:
        record(session, case.id, "reassign_skipped", now, reason="nobody else on duty")
        return None
    await _give(session, case, team, member, now)
    record(
        session,
        case.id,
        "reassigned",
        now,
        **{"from": current.handle if current else None, "to": member.handle, "reason": reason},
    )
    return member


async def reassign_to(
    session: AsyncSession, case: Case, handle: str, now: datetime, actor: str
) -> TeamMember:
    """Manual reassignment to ``handle`` (case API). Capacity and hours are not checked:
    a person chose this member on purpose.

    The member must be active in the case's team; a case without a team may go to any
    active team's member and moves to that team. Raises ValueError otherwise.
    """
    stmt = (
        select(TeamMember, Team)
        .join(Team, TeamMember.team_id == Team.id)
        .where(TeamMember.handle == handle, TeamMember.active.is_(True), Team.active.is_(True))
        .order_by(Team.id)
    )
    if case.team_id is not None:
        stmt = stmt.where(TeamMember.team_id == case.team_id)
    found = [(m, t) for m, t in await session.execute(stmt)]
    if not found:
        where = "any active team"
        if case.team_id is not None:
            team = await session.get(Team, case.team_id)
            where = f"team {team.name!r}" if team is not None else where
        raise ValueError(f"no active member {handle!r} in {where}")
    if len(found) > 1:
        teams = ", ".join(repr(t.name) for _, t in found)
        raise ValueError(f"{handle!r} is a member of several teams ({teams}); route the case first")
    member, team = found[0]
    if case.assignee_id == member.id:
        return member
    current = await session.get(TeamMember, case.assignee_id) if case.assignee_id else None
    await _give(session, case, team, member, now)
    record(
        session,
        case.id,
        "reassigned",
        now,
        actor=actor,
        **{"from": current.handle if current else None, "to": member.handle, "reason": "manual"},
    )
    return member


async def assign_queued(session: AsyncSession, now: datetime, limit: int = 100) -> int:
    """Give waiting cases (a team, no assignee) to members who came on duty since.

    Oldest cases first; returns how many found an assignee.
    """
    stmt = (
        select(Case)
        .where(Case.status == "open", Case.team_id.is_not(None), Case.assignee_id.is_(None))
        .order_by(Case.opened_at, Case.id)
        .limit(limit)
    )
    if is_postgres(session):
        stmt = stmt.with_for_update(skip_locked=True)
    assigned = 0
    for case in list(await session.scalars(stmt)):
        team = await session.get(Team, case.team_id)
        if team is None or not await on_duty(session, team, now):
            continue
        assigned += await assign(session, case, team, now) is not None
    return assigned
