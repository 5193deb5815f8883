"""The backlog: open cases now, by stage and time left, the longest wait first.

Stage of the waiting cycle, the first that applies:

- ``paused``: the clock is stopped (snoozed, or waiting on the customer);
- ``breached``: the breach fired, or the deadline has passed;
- ``warned``: a warning stage fired;
- ``not_warned``: everything else (cycles without a target included).

Time left is wall-clock time to the cycle's deadline (``due_at``, which already counts
business hours and pauses), bucketed for the counts.

Everything is decided in SQL, the same on SQLite and PostgreSQL: one ``GROUP BY`` of the
stage and bucket expressions counts every waiting case, and only the ``limit`` longest
waits are fetched (``ORDER BY started_at, id LIMIT``, served by the partial index of
waiting cycles). The Python twins below (``stage``, ``time_left_bucket``) state the same
rules for one case; the tests hold the SQL to them.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, case, exists, func, literal, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

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


# ----- the same rules in SQL ---------------------------------------------------------------


def paused_clause(now: datetime) -> ColumnElement[bool]:
    return or_(
        RC.paused_at.is_not(None),
        Case.waiting_on_customer.is_(True),
        and_(Case.snoozed_until.is_not(None), Case.snoozed_until > now),
    )


def warned_clause() -> ColumnElement[bool]:
    return exists().where(
        Deadline.cycle_id == RC.id,
        Deadline.stage.like("warning:%"),
        Deadline.status == "fired",
    )


def stage_sql(now: datetime) -> ColumnElement[str]:
    overdue = and_(RC.due_at.is_not(None), RC.due_at <= now)
    return case(
        (paused_clause(now), literal("paused")),
        (or_(RC.breached.is_(True), overdue), literal("breached")),
        (warned_clause(), literal("warned")),
        else_=literal("not_warned"),
    )


def time_left_sql(now: datetime) -> ColumnElement[str]:
    # Bounds are bound as instants, so no date arithmetic is needed in SQL (SQLite too).
    limits = [(RC.due_at < now + timedelta(seconds=s), literal(name)) for s, name in _LIMITS]
    return case(
        (paused_clause(now), literal("paused")),
        (RC.due_at.is_(None), literal("no_target")),
        (RC.due_at <= now, literal("overdue")),
        *limits,
        else_=literal("over_24h"),
    )


def waiting(
    stmt: Any, filters: dict[str, tuple[KeyValue, ...]], fields: tuple[str, ...] = ()
) -> Any:
    """Each open case with its waiting cycle (should there be more, the latest), filtered;
    ``fields`` names what else is selected (team, assignee: their joins)."""
    later = aliased(RC)
    stmt = joined(stmt, [*fields, *filters], case=True).where(
        Case.status == "open",
        RC.answered_at.is_(None),
        ~exists().where(
            later.case_id == RC.case_id, later.answered_at.is_(None), later.seq > RC.seq
        ),
    )
    for name, values in filters.items():
        stmt = stmt.where(filter_clause(name, values))
    return stmt


async def backlog(
    session: AsyncSession,
    now: datetime,
    filters: dict[str, tuple[KeyValue, ...]],
    limit: int = 100,
) -> Backlog:
    st, bucket = stage_sql(now).label("stage"), time_left_sql(now).label("bucket")
    each = waiting(select(st, bucket), filters).subquery()
    counts = select(each.c.stage, each.c.bucket, func.count().label("n")).group_by(
        each.c.stage, each.c.bucket
    )
    cells = {(r.stage, r.bucket): r.n for r in (await session.execute(counts)).all()}

    # Labelled as BacklogCase names its fields.
    listed = waiting(
        select(
            Case.id.label("case_id"),
            Case.conversation_id,
            Case.source,
            Case.brand,
            Team.name.label("team"),
            TeamMember.handle.label("assignee"),
            RC.priority,
            RC.seq.label("cycle"),
            RC.kind,
            RC.started_at,
            RC.due_at,
            st,
            bucket.label("time_left"),
        ),
        filters,
        ("team", "assignee"),
    ).order_by(RC.started_at, RC.id)
    cases = []
    for r in (await session.execute(listed.limit(limit))).all():
        clock_runs = r.time_left != "paused" and r.due_at is not None
        cases.append(
            BacklogCase(
                **r._mapping,
                waiting_seconds=(now - r.started_at).total_seconds(),
                time_left_seconds=(r.due_at - now).total_seconds() if clock_runs else None,
            )
        )
    matrix: dict[str, dict[str, int]] = {}
    for (s, b), n in sorted(
        cells.items(), key=lambda kv: (STAGES.index(kv[0][0]), TIME_LEFT_BUCKETS.index(kv[0][1]))
    ):
        matrix.setdefault(s, {})[b] = n
    total = sum(cells.values())
    return Backlog(
        now=now,
        open=total,
        filters={k: list(v) for k, v in filters.items()},
        by_stage={s: sum(n for (cs, _), n in cells.items() if cs == s) for s in STAGES},
        by_time_left={
            b: sum(n for (_, cb), n in cells.items() if cb == b) for b in TIME_LEFT_BUCKETS
        },
        by_stage_and_time_left=matrix,
        truncated=total > limit,
        cases=cases,
    )
