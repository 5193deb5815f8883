"""Counters kept as events happen, so ``/metrics`` reads a few rows instead of every table.

``stats_counters`` holds, per (metric, source, priority, le), how many ``events`` there were
and the ``total`` of their values; ``le`` is the histogram bucket an observation fell in (its
upper bound, ``+Inf`` above the last; not cumulative). The events:

| metric | when | labels | value |
|---|---|---|---|
| ``mention`` | a mention is stored (``apply_scored``) | source, le | ingest lag, s |
| ``first_response`` | a first cycle is answered (``answer``) | source, le | response, s |
| ``breach`` | a cycle with a target breaches (fired, or answered late) | source, priority | - |

Calls made during a transaction only add up in memory (``session.info``); just before the
transaction commits they are written in one upsert, rows in a fixed order (so two
transactions never wait on each other's rows in opposite orders), and a rollback forgets
them. So the counters move exactly with what is committed, on every replica and writer.

``recount`` rebuilds the table from the rows themselves (migration 0008 does the same
once): for data written around the application (bulk loads, tests that write rows). It
labels a breach with the cycle's priority now, where the event took the priority the cycle
had when it breached (a later, more urgent follow-up can raise it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Float,
    and_,
    case,
    cast,
    delete,
    event,
    extract,
    func,
    or_,
    select,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from shared.db.models import Mention, ResponseCycle, StatsCounter

RESPONSE_BUCKETS = (30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 28800, 86400)
LAG_BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
INF = "+Inf"

_PENDING = "stats_counters"
Key = tuple[str, str, str, str]  # metric, source, priority, le


def le_label(value: float) -> str:
    return INF if math.isinf(value) else repr(float(value))


def bucket(value: float, bounds: Sequence[float]) -> str:
    """The label of the first bound ``value`` is at most, as Prometheus' ``le``."""
    return le_label(next((b for b in bounds if value <= b), math.inf))


def _add(session: AsyncSession | Session, key: Key, value: float) -> None:
    sync = session.sync_session if isinstance(session, AsyncSession) else session
    pending: dict[Key, list[float]] = sync.info.setdefault(_PENDING, {})
    n, total = pending.get(key, (0, 0.0))
    pending[key] = [n + 1, total + value]


def mention_stored(session: AsyncSession, source: str, lag: float) -> None:
    _add(session, ("mention", source, "", bucket(lag, LAG_BUCKETS)), lag)


def first_response(session: AsyncSession, source: str, seconds: float) -> None:
    _add(session, ("first_response", source, "", bucket(seconds, RESPONSE_BUCKETS)), seconds)


def mark_breached(session: AsyncSession | Session, cycle: ResponseCycle, source: str) -> None:
    """Set ``cycle`` breached, counting the breach once (only a cycle with a target counts)."""
    if not cycle.breached and cycle.target_seconds is not None:
        _add(session, ("breach", source, cycle.priority, ""), 0.0)
    cycle.breached = True


def _upsert(dialect: str) -> Any:
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    stmt = insert(StatsCounter)
    return stmt.on_conflict_do_update(
        index_elements=["metric", "source", "priority", "le"],
        set_={
            "events": StatsCounter.events + stmt.excluded.events,
            "total": StatsCounter.total + stmt.excluded.total,
        },
    )


@event.listens_for(Session, "before_commit")
def _write_pending(session: Session) -> None:
    pending: dict[Key, list[float]] = session.info.pop(_PENDING, {})
    if pending:
        session.execute(_upsert(session.get_bind().dialect.name), _rows(pending))


def _rows(counted: dict[Key, list[float]]) -> list[dict[str, Any]]:
    """Upsert parameters in key order (the order every writer takes the rows' locks in)."""
    return [
        {"metric": m, "source": s, "priority": p, "le": le, "events": int(n), "total": t}
        for (m, s, p, le), (n, t) in sorted(counted.items())
    ]


@event.listens_for(Session, "after_rollback")
def _forget_pending(session: Session) -> None:
    session.info.pop(_PENDING, None)


# ----- rebuilding from the rows -----------------------------------------------------------


def _bucket_sql(value: ColumnElement[Any], bounds: Sequence[float]) -> ColumnElement[Any]:
    whens = [(value <= b, le_label(b)) for b in bounds]
    return case(*whens, else_=INF)


async def _mentions(session: AsyncSession, dialect: str) -> dict[Key, list[float]]:
    out: dict[Key, list[float]] = {}
    if dialect == "postgresql":
        lag = cast(extract("epoch", Mention.ingested_at - Mention.created_at), Float)
        le = _bucket_sql(lag, LAG_BUCKETS)
        stmt = select(Mention.source, le, func.count(), func.sum(lag)).group_by(Mention.source, le)
        for source, label, n, total in (await session.execute(stmt)).all():
            out[("mention", source, "", label)] = [n, float(total)]
        return out
    # SQLite keeps times as text (julianday would round them): the lags are computed here.
    stmt = select(Mention.source, Mention.created_at, Mention.ingested_at)
    async for source, created, ingested in await session.stream(stmt):
        lag = (ingested - created).total_seconds()
        key = ("mention", source, "", bucket(lag, LAG_BUCKETS))
        n, total = out.get(key, (0, 0.0))
        out[key] = [n + 1, total + lag]
    return out


async def recount(session: AsyncSession) -> None:
    """Replace the counters with what the tables hold (the caller commits)."""
    session.sync_session.info.pop(_PENDING, None)
    dialect = session.get_bind().dialect.name
    rc = ResponseCycle
    counted = await _mentions(session, dialect)
    rt_le = _bucket_sql(rc.response_seconds, RESPONSE_BUCKETS)
    stmt = (
        select(rc.source, rt_le, func.count(), func.sum(rc.response_seconds))
        .where(rc.kind == "first", rc.response_seconds.is_not(None), rc.source.is_not(None))
        .group_by(rc.source, rt_le)
    )
    for source, label, n, total in (await session.execute(stmt)).all():
        counted[("first_response", source, "", label)] = [n, float(total)]
    late = and_(rc.answered_at.is_not(None), rc.due_at.is_not(None), rc.answered_at > rc.due_at)
    stmt = (
        select(rc.source, rc.priority, func.count())
        .where(rc.target_seconds.is_not(None), or_(rc.breached.is_(True), late))
        .where(rc.source.is_not(None))
        .group_by(rc.source, rc.priority)
    )
    for source, priority, n in (await session.execute(stmt)).all():
        counted[("breach", source, priority, "")] = [n, 0.0]
    await session.execute(delete(StatsCounter))
    if counted:
        await session.execute(_upsert(dialect), _rows(counted))


async def read(session: AsyncSession) -> list[StatsCounter]:
    return list((await session.scalars(select(StatsCounter))).all())


def overdue_unfired(now: datetime) -> ColumnElement[bool]:
    """Waiting past the deadline, the breach not fired yet (breaches that are not counted
    yet: ``/metrics`` adds them at scrape time, as the reports do)."""
    rc = ResponseCycle
    return and_(
        rc.answered_at.is_(None),
        rc.breached.is_(False),
        rc.paused_at.is_(None),
        rc.target_seconds.is_not(None),
        rc.due_at.is_not(None),
        rc.due_at <= now,
    )
