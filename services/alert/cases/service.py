"""Cases and response cycles: what a scored mention does to its conversation's case.

Rules (docs/architecture.md, "SLA clock"):
- A customer post with no open cycle opens one; its clock starts at the post's own time.
- The brand's first post after the cycle started answers it (the clock stops there).
- A customer post after an answer starts the next response cycle of the same case.
- A more urgent follow-up while waiting raises the cycle's priority and can only bring the
  deadline closer, never push it back.
Every effect is keyed by the mention's event id, so a redelivered event changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from services.alert.sla.deadlines import due_at, more_urgent, stage_deadlines
from shared.config import SlaPolicy
from shared.db.models import Case, Deadline, Mention, ResponseCycle
from shared.events import ScoredMention, utcnow


@dataclass
class Outcome:
    """What one mention did, for logs and metrics."""

    event_id: str
    action: str  # duplicate | opened | next_cycle | answered | raised | noted
    case_id: int | None = None


def _mention_row(scored: ScoredMention, now: datetime) -> Mention:
    m, s = scored.mention, scored.scores
    return Mention(
        event_id=m.event_id,
        source=m.source,
        external_id=m.external_id,
        conversation_id=m.conversation_id,
        brand=m.brand,
        author_id=m.author.id,
        is_brand=m.is_brand,
        text=m.text,
        url=m.url,
        created_at=m.created_at,
        ingested_at=m.ingested_at,
        stored_at=now,
        lang=s.lang,
        sentiment=s.sentiment.label,
        negative_score=s.sentiment.scores.get("negative", 0.0),
        complaint_score=s.complaint.score,
        urgency_score=s.urgency.score,
        priority=s.urgency.level,
        reasons={"reasons": s.urgency.reasons},
        model_version=s.model_version,
    )


async def apply_scored(
    session: AsyncSession, scored: ScoredMention, policy: SlaPolicy, now: datetime | None = None
) -> Outcome:
    """Record one scored mention and move its case. The caller commits."""
    now = now or utcnow()
    m = scored.mention
    # The mention row is the idempotency key: a second delivery stops here.
    try:
        async with session.begin_nested():
            session.add(_mention_row(scored, now))
    except IntegrityError:
        return Outcome(m.event_id, "duplicate")

    case = await session.scalar(select(Case).where(Case.conversation_id == m.conversation_id))
    if m.is_brand:
        return await _brand_post(session, case, scored)
    return await _customer_post(session, case, scored, policy, now)


async def _current_cycle(session: AsyncSession, case: Case) -> ResponseCycle | None:
    return await session.scalar(
        select(ResponseCycle).where(
            ResponseCycle.case_id == case.id, ResponseCycle.seq == case.cycles
        )
    )


async def _customer_post(
    session: AsyncSession,
    case: Case | None,
    scored: ScoredMention,
    policy: SlaPolicy,
    now: datetime,
) -> Outcome:
    m, priority = scored.mention, scored.scores.urgency.level
    if case is None:
        case = Case(
            conversation_id=m.conversation_id,
            brand=m.brand,
            source=m.source,
            status="open",
            priority=priority,
            opened_at=m.created_at,
            answered_at=None,
            cycles=0,
            created_at=now,
            updated_at=now,
        )
        session.add(case)
        await session.flush()
        await _open_cycle(session, case, scored, policy, now)
        await _answer_from_known_reply(session, case, now)
        return Outcome(m.event_id, "opened", case.id)

    if case.status == "answered":
        if case.answered_at is not None and m.created_at <= case.answered_at:
            return Outcome(m.event_id, "noted", case.id)  # a late copy of an answered post
        case.status = "open"
        case.answered_at = None
        case.priority = priority
        case.updated_at = now
        await _open_cycle(session, case, scored, policy, now)
        return Outcome(m.event_id, "next_cycle", case.id)

    cycle = await _current_cycle(session, case)
    if cycle is not None and more_urgent(priority, cycle.priority):
        await _raise_priority(session, case, cycle, priority, policy, now, scored.mention.backfill)
        return Outcome(m.event_id, "raised", case.id)
    return Outcome(m.event_id, "noted", case.id)


async def _open_cycle(
    session: AsyncSession, case: Case, scored: ScoredMention, policy: SlaPolicy, now: datetime
) -> ResponseCycle:
    m, priority = scored.mention, scored.scores.urgency.level
    case.cycles += 1
    due = due_at(policy, priority, m.created_at)
    cycle = ResponseCycle(
        case_id=case.id,
        seq=case.cycles,
        started_at=m.created_at,
        started_event_id=m.event_id,
        priority=priority,
        target_seconds=policy.target_for(priority),
        due_at=due,
        answered_at=None,
        breached=False,
    )
    session.add(cycle)
    await session.flush()
    if due is not None:
        _add_deadlines(session, case, cycle, policy, due, now, m.backfill)
    return cycle


def _add_deadlines(
    session: AsyncSession,
    case: Case,
    cycle: ResponseCycle,
    policy: SlaPolicy,
    due: datetime,
    now: datetime,
    backfill: bool,
) -> None:
    for stage in stage_deadlines(policy, cycle.started_at, due):
        # History replayed by backfill is recorded, but nobody is paged for the past.
        status = "suppressed" if backfill and stage.due_at <= now else "pending"
        session.add(
            Deadline(
                case_id=case.id,
                cycle_id=cycle.id,
                stage=stage.stage,
                due_at=stage.due_at,
                status=status,
                fired_at=None,
            )
        )


async def _raise_priority(
    session: AsyncSession,
    case: Case,
    cycle: ResponseCycle,
    priority: str,
    policy: SlaPolicy,
    now: datetime,
    backfill: bool,
) -> None:
    new_due = due_at(policy, priority, cycle.started_at)
    cycle.priority = case.priority = priority
    case.updated_at = now
    if new_due is None or (cycle.due_at is not None and cycle.due_at <= new_due):
        return
    cycle.due_at = new_due
    cycle.target_seconds = policy.target_for(priority)
    pending = (
        await session.scalars(
            select(Deadline).where(Deadline.cycle_id == cycle.id, Deadline.status == "pending")
        )
    ).all()
    fired = {
        d.stage
        for d in (await session.scalars(select(Deadline).where(Deadline.cycle_id == cycle.id)))
        if d.status != "pending"
    }
    for d in pending:
        await session.delete(d)
    await session.flush()
    for stage in stage_deadlines(policy, cycle.started_at, new_due):
        if stage.stage in fired:
            continue  # each (cycle, stage) is notified at most once
        status = "suppressed" if backfill and stage.due_at <= now else "pending"
        session.add(
            Deadline(
                case_id=case.id,
                cycle_id=cycle.id,
                stage=stage.stage,
                due_at=stage.due_at,
                status=status,
                fired_at=None,
            )
        )


async def _brand_post(session: AsyncSession, case: Case | None, scored: ScoredMention) -> Outcome:
    m = scored.mention
    if case is None or case.status != "open":
        return Outcome(m.event_id, "noted", case.id if case else None)
    cycle = await _current_cycle(session, case)
    if cycle is None or m.created_at < cycle.started_at:
        return Outcome(m.event_id, "noted", case.id)
    await _answer(session, case, cycle, m.created_at, m.event_id, m.url, utcnow())
    return Outcome(m.event_id, "answered", case.id)


async def _answer_from_known_reply(session: AsyncSession, case: Case, now: datetime) -> None:
    """A brand reply that arrived before the post it answers (replays) still answers it."""
    cycle = await _current_cycle(session, case)
    assert cycle is not None
    reply = await session.scalar(
        select(Mention)
        .where(
            Mention.conversation_id == case.conversation_id,
            Mention.is_brand.is_(True),
            Mention.created_at >= cycle.started_at,
        )
        .order_by(Mention.created_at)
        .limit(1)
    )
    if reply is not None:
        await _answer(session, case, cycle, reply.created_at, reply.event_id, reply.url, now)


async def _answer(
    session: AsyncSession,
    case: Case,
    cycle: ResponseCycle,
    at: datetime,
    event_id: str,
    url: str | None,
    now: datetime,
) -> None:
    cycle.answered_at = at
    cycle.answered_event_id = event_id
    cycle.response_seconds = (at - cycle.started_at).total_seconds()
    cycle.breached = cycle.breached or (cycle.due_at is not None and at > cycle.due_at)
    case.status = "answered"
    case.answered_at = at
    case.reply_url = url
    case.updated_at = now
    # Stages not yet fired are moot once the customer has an answer.
    await session.execute(
        update(Deadline)
        .where(Deadline.cycle_id == cycle.id, Deadline.status == "pending")
        .values(status="cancelled")
    )
