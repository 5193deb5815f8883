"""Fire due deadlines from the database, each exactly once.

Deadlines live in the database, so a restarted alert service picks up where it stopped.
With several replicas, FOR UPDATE SKIP LOCKED (PostgreSQL) hands each due row to one of them.

What firing means, by stage:
- ``warning:<f>`` / ``breach``: an alert to the case's channels (the team's, or defaults);
  a breach also freezes the policy's escalation chain on the case and schedules its steps.
- ``escalation:<n>``: an alert to the step's target (team, team lead, manager).
- ``reassign``: the assignee did not act in time; the case goes to the next member on duty.
- ``snooze_end``: the snooze is over; the clock runs again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.alert.cases.service import case_policy
from services.alert.cases.timeline import record
from services.alert.notify.payload import alert_payload
from services.alert.routing.assignment import reassign_if_idle
from services.alert.sla import clock
from services.alert.stats import counters
from shared.db.locks import is_postgres
from shared.db.models import (
    Case,
    Deadline,
    Mention,
    OutboxMessage,
    ResponseCycle,
    Team,
    TeamMember,
)
from shared.events import utcnow

log = logging.getLogger(__name__)

ESCALATION_ROLES = {"team_lead": "lead", "manager": "manager"}


@dataclass
class Delivery:
    """Where alerts go when a case has no team or a step names no channels."""

    default_channels: list[str] = field(default_factory=lambda: ["log"])
    # Channels that exist in this process (others are skipped with a warning).
    known_channels: set[str] = field(default_factory=lambda: {"log"})
    case_url: str | None = None  # e.g. "http://host:8000/api/v1/cases/{id}"


async def fire_due(
    sessions: async_sessionmaker[AsyncSession],
    delivery: Delivery | list[str],
    now: datetime | None = None,
    batch: int = 200,
) -> int:
    """Fire every pending deadline due by ``now``; returns how many fired."""
    if isinstance(delivery, list):
        delivery = Delivery(default_channels=delivery, known_channels=set(delivery))
    now = now or utcnow()
    stmt = (
        select(Deadline)
        .where(Deadline.status == "pending", Deadline.due_at <= now)
        .order_by(Deadline.due_at, Deadline.id)
        .limit(batch)
    )
    async with sessions() as session, session.begin():
        if is_postgres(session):
            stmt = stmt.with_for_update(skip_locked=True)
        due = list((await session.scalars(stmt)).all())
        for deadline in due:
            deadline.status = "fired"
            deadline.fired_at = now
            case = await session.get(Case, deadline.case_id)
            cycle = await session.get(ResponseCycle, deadline.cycle_id)
            assert case is not None and cycle is not None
            await _fire(session, deadline, case, cycle, delivery, now)
    return len(due)


async def _fire(
    session: AsyncSession,
    deadline: Deadline,
    case: Case,
    cycle: ResponseCycle,
    delivery: Delivery,
    now: datetime,
) -> None:
    family = deadline.stage.split(":", 1)[0]
    if family == "reassign":
        await reassign_if_idle(session, case, now)
        return
    if family == "snooze_end":
        policy = await case_policy(session, case)
        case.snoozed_until = None
        if not case.waiting_on_customer:  # still waiting: the customer's post resumes it
            # The snooze ends at its ``until``, even when the scheduler gets to it later.
            await clock.resume(session, cycle, policy, min(deadline.due_at, now))
        record(session, case.id, "snooze_ended", now)
        return

    extra: dict[str, Any] = {}
    channels = await _team_channels(session, case, delivery)
    if family == "breach":
        counters.mark_breached(session, cycle, case.source)
        await _start_escalation(session, case, cycle, now, breach_at=deadline.due_at)
    elif family == "escalation":
        step_no = int(deadline.stage.split(":", 1)[1])
        step = (case.escalation or {}).get("steps", [])[step_no - 1]
        recipients = await _recipients(session, case, step["notify"])
        extra["escalation"] = {"step": step_no, "target": step["notify"], "recipients": recipients}
        if step.get("channels"):
            channels = step["channels"]
    record(session, case.id, "alert", now, stage=deadline.stage, channels=channels)
    await _enqueue(session, case, cycle, deadline.stage, channels, delivery, now, extra)
    log.info(
        "fired %s for case %s (cycle %s)",
        deadline.stage,
        case.id,
        cycle.seq,
        extra={"case_id": case.id, "event_id": cycle.started_event_id, "stage": deadline.stage},
    )


async def _team_channels(session: AsyncSession, case: Case, delivery: Delivery) -> list[str]:
    team = await session.get(Team, case.team_id) if case.team_id else None
    names = (team.channels or {}).get("names", []) if team else []
    return list(names) or list(delivery.default_channels)


async def _recipients(session: AsyncSession, case: Case, target: str) -> list[dict[str, str]]:
    if case.team_id is None:
        return []
    stmt = select(TeamMember).where(TeamMember.team_id == case.team_id, TeamMember.active)
    if target in ESCALATION_ROLES:
        stmt = stmt.where(TeamMember.role == ESCALATION_ROLES[target])
    return [
        {"handle": m.handle, "name": m.name, "email": m.email or ""}
        for m in await session.scalars(stmt.order_by(TeamMember.id))
    ]


async def _start_escalation(
    session: AsyncSession, case: Case, cycle: ResponseCycle, now: datetime, *, breach_at: datetime
) -> None:
    """Freeze the policy's chain on the case; later policy edits don't change it.

    Step 1 is due ``after_seconds`` after the breach's own time (not after the moment the
    scheduler got to it, which may be later after a restart), each next step after the last.
    """
    policy = await case_policy(session, case)
    if policy is None or not policy.escalation or case.acknowledged_at is not None:
        return
    steps = [s.model_dump() for s in policy.escalation]
    case.escalation = {
        "cycle": cycle.seq,
        "policy": policy.name,
        "policy_id": case.policy_id,
        "started_at": now.isoformat(),
        "steps": steps,
    }
    at = breach_at
    for n, step in enumerate(steps, start=1):
        at = at + timedelta(seconds=step["after_seconds"])
        session.add(
            Deadline(
                case_id=case.id,
                cycle_id=cycle.id,
                stage=f"escalation:{n}",
                fraction=None,
                due_at=at,
                status="pending",
                fired_at=None,
            )
        )
    record(session, case.id, "escalation_started", now, steps=steps)


async def _enqueue(
    session: AsyncSession,
    case: Case,
    cycle: ResponseCycle,
    stage: str,
    channels: list[str],
    delivery: Delivery,
    now: datetime,
    extra: dict[str, Any],
) -> None:
    post = await session.get(Mention, cycle.started_event_id)
    assignee = await session.get(TeamMember, case.assignee_id) if case.assignee_id else None
    team = await session.get(Team, case.team_id) if case.team_id else None
    payload = alert_payload(stage, case, cycle, post, now)
    payload["case"]["team"] = team.name if team else None
    payload["case"]["assignee"] = assignee.handle if assignee else None
    payload.update(extra)
    if delivery.case_url:
        payload["links"] = {"case": delivery.case_url.format(id=case.id)}
    for channel in dict.fromkeys(channels):
        if channel not in delivery.known_channels:
            log.warning("case %s: channel %r is not configured; skipped", case.id, channel)
            continue
        session.add(
            OutboxMessage(
                case_id=case.id,
                cycle_id=cycle.id,
                stage=stage,
                channel=channel,
                payload=payload,
                status="pending",
                attempts=0,
                next_attempt_at=now,
                created_at=now,
            )
        )
