"""Cases and response cycles: what a scored mention does to its conversation's case.

Rules (docs/sla.md):
- A customer post with no open cycle opens one; its clock starts at the post's own time.
  A new case picks its SLA policy (first match by conditions) and keeps that version.
- The brand's first post after the cycle started answers it (the clock stops there).
- A customer post after an answer starts the next response cycle of the same case.
- A more urgent follow-up while waiting raises the priority and can only shorten the target.
- A customer post while the case waits on the customer resumes the paused clock.
Every effect is keyed by the mention's event id, so a redelivered event changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from services.alert.cases.timeline import record
from services.alert.config import IncidentSettings
from services.alert.routing.assignment import assign
from services.alert.routing.incidents import link_incident
from services.alert.routing.rules import route
from services.alert.sla import clock
from services.alert.sla.policies import CycleKind, Facts, SlaPolicy, choose, more_urgent
from services.alert.sla.store import active_policies, policy_by_id
from services.alert.stats import counters
from shared.db.models import Case, Mention, ResponseCycle
from shared.events import ScoredMention, utcnow


@dataclass
class CaseSettings:
    incidents: IncidentSettings = field(default_factory=IncidentSettings)


@dataclass
class Outcome:
    """What one mention did, for logs and metrics."""

    event_id: str
    action: str  # duplicate | opened | next_cycle | answered | raised | resumed | noted
    case_id: int | None = None


def facts_of(scored: ScoredMention) -> Facts:
    m, s = scored.mention, scored.scores
    intents = [r.split(":", 1)[1] for r in s.urgency.reasons if r.startswith("intent:")]
    return Facts(
        source=m.source,
        brand=m.brand,
        language=s.lang,
        priority=s.urgency.level,
        vip=m.author.vip,
        intents=intents,
    )


def _mention_row(scored: ScoredMention, now: datetime) -> Mention:
    m, s = scored.mention, scored.scores
    return Mention(
        event_id=m.event_id,
        source=m.source,
        external_id=m.external_id,
        conversation_id=m.conversation_id,
        brand=m.brand,
        author_id=m.author.id,
        author_vip=m.author.vip,
        author_followers=m.author.followers,
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
        # What each reason added to the urgency score, so an agent sees why it is P1.
        reasons=Mention.stored_reasons(
            s.urgency.reasons, [c.model_dump() for c in s.urgency.contributions]
        ),
        model_version=s.model_version,
    )


async def apply_scored(
    session: AsyncSession,
    scored: ScoredMention,
    settings: CaseSettings | None = None,
    now: datetime | None = None,
) -> Outcome:
    """Record one scored mention and move its case. The caller commits."""
    now = now or utcnow()
    settings = settings or CaseSettings()
    m = scored.mention
    # The mention row is the idempotency key: a second delivery stops here.
    try:
        async with session.begin_nested():
            session.add(_mention_row(scored, now))
    except IntegrityError:
        return Outcome(m.event_id, "duplicate")
    counters.mention_stored(session, m.source, (m.ingested_at - m.created_at).total_seconds())

    case = await session.scalar(select(Case).where(Case.conversation_id == m.conversation_id))
    if m.is_brand:
        if case is None or case.status != "open":
            return Outcome(m.event_id, "noted", case.id if case else None)
        cycle = await current_cycle(session, case)
        if m.created_at < cycle.started_at:
            return Outcome(m.event_id, "noted", case.id)
        await answer(session, case, cycle, m.created_at, m.url, now, via=m.event_id)
        return Outcome(m.event_id, "answered", case.id)
    if case is None:
        case = await _open_case(session, scored, settings, now)
        return Outcome(m.event_id, "opened", case.id)
    return await _follow_up(session, case, scored, now)


async def current_cycle(session: AsyncSession, case: Case) -> ResponseCycle:
    cycle = await session.scalar(
        select(ResponseCycle).where(
            ResponseCycle.case_id == case.id, ResponseCycle.seq == case.cycles
        )
    )
    assert cycle is not None, f"case {case.id} has no cycle {case.cycles}"
    return cycle


async def case_policy(session: AsyncSession, case: Case) -> SlaPolicy | None:
    return await policy_by_id(session, case.policy_id) if case.policy_id else None


async def _open_case(
    session: AsyncSession, scored: ScoredMention, settings: CaseSettings, now: datetime
) -> Case:
    m = scored.mention
    facts = facts_of(scored)
    chosen = choose(await active_policies(session), facts)
    case = Case(
        conversation_id=m.conversation_id,
        brand=m.brand,
        source=m.source,
        status="open",
        priority=facts.priority,
        opened_at=m.created_at,
        answered_at=None,
        cycles=0,
        created_at=now,
        updated_at=now,
        language=facts.language,
        vip=facts.vip,
        intents={"intents": facts.intents},
        policy_id=chosen[0] if chosen else None,
    )
    session.add(case)
    await session.flush()
    policy = chosen[1] if chosen else None
    cycle = await _open_cycle(session, case, scored, policy, "first", now)
    record(
        session,
        case.id,
        "opened",
        now,
        priority=facts.priority,
        policy=policy.name if policy else None,
        due_at=cycle.due_at.isoformat() if cycle.due_at else None,
        event_id=m.event_id,
    )
    team = await route(session, facts)
    if team is not None:
        await assign(session, case, team, now)
    await link_incident(session, case, facts, settings.incidents, now)
    await _answer_from_known_reply(session, case, cycle, now)
    return case


async def _open_cycle(
    session: AsyncSession,
    case: Case,
    scored: ScoredMention,
    policy: SlaPolicy | None,
    kind: CycleKind,
    now: datetime,
) -> ResponseCycle:
    m, priority = scored.mention, scored.scores.urgency.level
    case.cycles += 1
    target = policy.target(kind, priority, m.source, scored.scores.lang) if policy else None
    cycle = ResponseCycle(
        case_id=case.id,
        seq=case.cycles,
        kind=kind,
        started_at=m.created_at,
        started_event_id=m.event_id,
        priority=priority,
        target_seconds=target,
        business_time=bool(policy and policy.calendar),
        paused_seconds=0.0,
        due_at=None,
        answered_at=None,
        breached=False,
    )
    session.add(cycle)
    await session.flush()
    if policy is not None:
        clock.schedule(session, case.id, cycle, policy, now, backfill=m.backfill)
    return cycle


async def _follow_up(
    session: AsyncSession, case: Case, scored: ScoredMention, now: datetime
) -> Outcome:
    m, priority = scored.mention, scored.scores.urgency.level
    policy = await case_policy(session, case)
    if case.status == "answered":
        if case.answered_at is not None and m.created_at <= case.answered_at:
            return Outcome(m.event_id, "noted", case.id)  # a late copy of an answered post
        case.status = "open"
        case.answered_at = None
        case.acknowledged_at = None
        case.escalation = None
        case.priority = priority
        case.updated_at = now
        cycle = await _open_cycle(session, case, scored, policy, "next", now)
        record(session, case.id, "next_cycle", now, cycle=cycle.seq, event_id=m.event_id)
        return Outcome(m.event_id, "next_cycle", case.id)

    cycle = await current_cycle(session, case)
    action = "noted"
    if case.waiting_on_customer:
        case.waiting_on_customer = False
        if case.snoozed_until is None:  # a snooze keeps the clock stopped until it ends
            # The wait ends when the customer wrote (the post's own time), not when we saw it.
            await clock.resume(session, cycle, policy, min(m.created_at, now))
        record(session, case.id, "customer_replied", now, event_id=m.event_id)
        action = "resumed"
    if more_urgent(priority, cycle.priority):
        await _raise_priority(session, case, cycle, policy, priority, scored, now)
        action = "raised"
    return Outcome(m.event_id, action, case.id)


async def _raise_priority(
    session: AsyncSession,
    case: Case,
    cycle: ResponseCycle,
    policy: SlaPolicy | None,
    priority: str,
    scored: ScoredMention,
    now: datetime,
) -> None:
    before = cycle.priority
    cycle.priority = case.priority = priority
    case.updated_at = now
    if policy is not None:
        target = policy.target(cycle.kind, priority, case.source, case.language or "und")  # type: ignore[arg-type]
        if cycle.target_seconds is None and target is not None:
            cycle.target_seconds = target
            clock.schedule(session, case.id, cycle, policy, now, backfill=scored.mention.backfill)
        else:
            await clock.shorten_target(session, cycle, policy, target)
    record(
        session,
        case.id,
        "priority_raised",
        now,
        before=before,
        after=priority,
        due_at=cycle.due_at.isoformat() if cycle.due_at else None,
    )


async def _answer_from_known_reply(
    session: AsyncSession, case: Case, cycle: ResponseCycle, now: datetime
) -> None:
    """A brand reply that arrived before the post it answers (replays) still answers it."""
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
        await answer(session, case, cycle, reply.created_at, reply.url, now, via=reply.event_id)


async def answer(
    session: AsyncSession,
    case: Case,
    cycle: ResponseCycle,
    at: datetime,
    url: str | None,
    now: datetime,
    *,
    via: str | None = None,
    actor: str = "system",
) -> None:
    """Stop the clock: the brand answered at ``at`` (seen in the feed, or marked via the API)."""
    policy = await case_policy(session, case)
    if cycle.paused_at is not None:
        await clock.resume(session, cycle, policy, min(at, now))
    cycle.answered_at = at
    cycle.answered_event_id = via
    cycle.response_seconds = (at - cycle.started_at).total_seconds()
    cycle.business_response_seconds = clock.business_response_seconds(cycle, policy, at)
    if cycle.due_at is not None and at > cycle.due_at:
        counters.mark_breached(session, cycle, case.source)
    if cycle.kind == "first":
        counters.first_response(session, case.source, cycle.response_seconds)
    case.status = "answered"
    case.answered_at = at
    case.reply_url = url
    case.snoozed_until = None
    case.waiting_on_customer = False
    case.updated_at = now
    # Stages, escalations and reassignment not yet fired are moot once there is an answer.
    await clock.cancel_pending(session, cycle)
    record(
        session,
        case.id,
        "answered",
        now,
        actor=actor,
        answered_at=at.isoformat(),
        reply_url=url,
        response_seconds=cycle.response_seconds,
        breached=cycle.breached,
    )
