"""The SLA clock of a response cycle: its deadlines, pauses and priority changes.

Every deadline of a cycle is ``fraction * target`` of *counted* time after the cycle
started, where counted time is business time in the policy's calendar (or wall-clock time)
minus the time spent paused. Pausing stops the pending stages; resuming adds the paused
(counted) time and recomputes them. So one formula gives every deadline, whatever happened.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.alert.sla.calendars import Calendar, add_seconds, seconds_between
from services.alert.sla.policies import SlaPolicy
from shared.db.models import Deadline, ResponseCycle

SLA_OPEN = ("pending", "paused")


def _calendar(cycle: ResponseCycle, policy: SlaPolicy) -> Calendar | None:
    return policy.calendar if cycle.business_time else None


def business_response_seconds(
    cycle: ResponseCycle, policy: SlaPolicy | None, answered_at: datetime
) -> float:
    """The cycle's response time on the business clock: counted time from its start to
    ``answered_at`` (wall time without a policy or business hours) less its paused time."""
    calendar = _calendar(cycle, policy) if policy is not None else None
    counted = seconds_between(calendar, cycle.started_at, answered_at)
    return max(0.0, counted - cycle.paused_seconds)


def due_at(cycle: ResponseCycle, policy: SlaPolicy, fraction: float) -> datetime:
    assert cycle.target_seconds is not None
    counted = fraction * cycle.target_seconds + cycle.paused_seconds
    return add_seconds(_calendar(cycle, policy), cycle.started_at, counted)


def schedule(
    session: AsyncSession,
    case_id: int,
    cycle: ResponseCycle,
    policy: SlaPolicy,
    now: datetime,
    *,
    backfill: bool,
) -> None:
    """Create the warning and breach deadlines of a new cycle (none without a target)."""
    if cycle.target_seconds is None:
        cycle.due_at = None
        return
    cycle.due_at = due_at(cycle, policy, 1.0)
    for stage, fraction in policy.stages():
        due = due_at(cycle, policy, fraction)
        # History replayed by backfill is recorded, but nobody is paged for the past.
        status = "suppressed" if backfill and due <= now else "pending"
        session.add(
            Deadline(
                case_id=case_id,
                cycle_id=cycle.id,
                stage=stage,
                fraction=fraction,
                due_at=due,
                status=status,
                fired_at=None,
            )
        )


async def _sla_deadlines(session: AsyncSession, cycle: ResponseCycle) -> list[Deadline]:
    rows = await session.scalars(
        select(Deadline).where(
            Deadline.cycle_id == cycle.id,
            Deadline.fraction.is_not(None),
            Deadline.status.in_(SLA_OPEN),
        )
    )
    return list(rows)


async def reschedule(session: AsyncSession, cycle: ResponseCycle, policy: SlaPolicy) -> None:
    """Recompute the stages not yet fired (after a resume or a target change)."""
    if cycle.target_seconds is None:
        return
    cycle.due_at = due_at(cycle, policy, 1.0)
    status = "paused" if cycle.paused_at is not None else "pending"
    for deadline in await _sla_deadlines(session, cycle):
        assert deadline.fraction is not None
        deadline.due_at = due_at(cycle, policy, deadline.fraction)
        deadline.status = status


async def pause(session: AsyncSession, cycle: ResponseCycle, now: datetime) -> bool:
    """Stop the clock; False if it was already stopped."""
    if cycle.paused_at is not None or cycle.answered_at is not None:
        return False
    cycle.paused_at = now
    await session.execute(
        update(Deadline)
        .where(
            Deadline.cycle_id == cycle.id,
            Deadline.fraction.is_not(None),
            Deadline.status == "pending",
        )
        .values(status="paused")
    )
    return True


async def resume(
    session: AsyncSession, cycle: ResponseCycle, policy: SlaPolicy | None, now: datetime
) -> bool:
    """Start the clock again; the paused (counted) time moves every pending stage.

    Without a policy there are no stages, but the cycle still stops being paused.
    """
    if cycle.paused_at is None:
        return False
    if policy is None:
        cycle.paused_at = None
        return True
    cycle.paused_seconds += seconds_between(_calendar(cycle, policy), cycle.paused_at, now)
    cycle.paused_at = None
    await reschedule(session, cycle, policy)
    return True


async def shorten_target(
    session: AsyncSession, cycle: ResponseCycle, policy: SlaPolicy, target: float | None
) -> bool:
    """A worse follow-up: the target can only get shorter. True if it changed."""
    if target is None or (cycle.target_seconds is not None and cycle.target_seconds <= target):
        return False
    had_target = cycle.target_seconds is not None
    cycle.target_seconds = target
    if had_target:
        await reschedule(session, cycle, policy)
    return True


async def cancel_pending(
    session: AsyncSession, cycle: ResponseCycle, *, stages_like: str | None = None
) -> None:
    """Cancel what has not fired: everything (answered) or one family, e.g. 'escalation:%'."""
    stmt = update(Deadline).where(Deadline.cycle_id == cycle.id, Deadline.status.in_(SLA_OPEN))
    if stages_like is not None:
        stmt = stmt.where(Deadline.stage.like(stages_like))
    await session.execute(stmt.values(status="cancelled"))
