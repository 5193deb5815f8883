"""The backlog: open cases now, by stage and time left, the longest wait first.

Stage of the waiting cycle, the first that applies:

- ``paused``: the clock is stopped (snoozed, or waiting on the customer);
- ``breached``: the breach fired, or the deadline has passed;
- ``warned``: a warning stage fired;
- ``not_warned``: everything else (cycles without a target included).

Time left is wall-clock time to the cycle's deadline (``due_at``, which already counts
business hours and pauses), bucketed for the counts.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.alert.stats.query import KeyValue
from services.alert.stats.schemas import STAGES, TIME_LEFT_BUCKETS, Backlog, BacklogCase
from services.alert.stats.service import RC, filter_clause, joined
from shared.db.models import Case, Deadline, Team, TeamMember

# (upper bound in seconds, bucket) for time left > 0, in order.
_LIMITS = ((900, "under_15m"), (3600, "15m_to_1h"), (4 * 3600, "1h_to_4h"), (86400, "4h_to_24h"))


def time_left_bucket(time_left: float | None, paused: bool) -> str:
    if paused:
        return "paused"
    if time_left is None:
        return "no_target"
    if time_left <= 0:
        return "overdue"
    return next((name for limit, name in _LIMITS if time_left < limit), "over_24h")


def stage(paused: bool, breached: bool, warned: bool) -> str:
    if paused:
        return "paused"
    if breached:
        return "breached"
    return "warned" if warned else "not_warned"


async def backlog(
    session: AsyncSession,
    now: datetime,
    filters: dict[str, tuple[KeyValue, ...]],
    limit: int = 100,
) -> Backlog:
    stmt = joined(
        select(
            Case.id,
            Case.conversation_id,
            Case.source,
            Case.brand,
            Case.snoozed_until,
            Case.waiting_on_customer,
            Team.name.label("team"),
            TeamMember.handle.label("assignee"),
            RC.id.label("cycle_id"),
            RC.seq,
            RC.kind,
            RC.priority,
            RC.started_at,
            RC.due_at,
            RC.breached,
            RC.paused_at,
        )
    ).where(Case.status == "open", RC.answered_at.is_(None))
    for name, values in filters.items():
        stmt = stmt.where(filter_clause(name, values))
    rows = (await session.execute(stmt.order_by(RC.started_at, RC.id))).all()
    # One waiting cycle per case; should there be more, the latest is the one that counts.
    latest = {}
    for r in rows:
        if r.id not in latest or r.seq > latest[r.id].seq:
            latest[r.id] = r
    current = sorted(latest.values(), key=lambda r: (r.started_at, r.cycle_id))
    ids = [r.cycle_id for r in current]
    warned: set[int] = set()
    for start in range(0, len(ids), 500):
        warned.update(
            (
                await session.scalars(
                    select(Deadline.cycle_id)
                    .where(
                        Deadline.cycle_id.in_(ids[start : start + 500]),
                        Deadline.stage.like("warning:%"),
                        Deadline.status == "fired",
                    )
                    .distinct()
                )
            ).all()
        )
    cases: list[BacklogCase] = []
    stages: Counter[str] = Counter()
    buckets: Counter[str] = Counter()
    cells: Counter[tuple[str, str]] = Counter()
    for r in current:
        paused = (
            r.paused_at is not None
            or r.waiting_on_customer
            or (r.snoozed_until is not None and r.snoozed_until > now)
        )
        time_left = None if r.due_at is None else (r.due_at - now).total_seconds()
        breached = r.breached or (time_left is not None and time_left <= 0)
        st = stage(paused, breached, r.cycle_id in warned)
        bucket = time_left_bucket(time_left, paused)
        stages[st] += 1
        buckets[bucket] += 1
        cells[(st, bucket)] += 1
        cases.append(
            BacklogCase(
                case_id=r.id,
                conversation_id=r.conversation_id,
                source=r.source,
                brand=r.brand,
                team=r.team,
                assignee=r.assignee,
                priority=r.priority,
                cycle=r.seq,
                kind=r.kind,
                started_at=r.started_at,
                waiting_seconds=(now - r.started_at).total_seconds(),
                due_at=r.due_at,
                time_left_seconds=None if paused else time_left,
                stage=st,
                time_left=bucket,
            )
        )
    matrix: dict[str, dict[str, int]] = {}
    for (st, bucket), n in sorted(
        cells.items(), key=lambda kv: (STAGES.index(kv[0][0]), TIME_LEFT_BUCKETS.index(kv[0][1]))
    ):
        matrix.setdefault(st, {})[bucket] = n
    return Backlog(
        now=now,
        open=len(cases),
        filters={k: list(v) for k, v in filters.items()},
        by_stage={s: stages[s] for s in STAGES},
        by_time_left={b: buckets[b] for b in TIME_LEFT_BUCKETS},
        by_stage_and_time_left=matrix,
        truncated=len(cases) > limit,
        cases=cases[:limit],
    )
