"""Response-time statistics over first-response cycles started in a time range."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel
from sqlalchemy import Row, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.alert.stats.percentiles import percentile_cont
from shared.db.models import ResponseCycle


class Percentiles(BaseModel):
    p50: float | None
    p90: float | None
    p95: float | None
    mean: float | None


class ResponseTimeStats(BaseModel):
    since: datetime
    until: datetime
    cases: int
    answered: int
    unanswered: int
    first_response_seconds: Percentiles
    within_target_ratio: float | None
    breaches: int


async def response_times(
    session: AsyncSession, since: datetime, until: datetime, now: datetime
) -> ResponseTimeStats:
    rows = (
        await session.execute(
            select(
                ResponseCycle.response_seconds,
                ResponseCycle.target_seconds,
                ResponseCycle.due_at,
                ResponseCycle.breached,
            ).where(
                ResponseCycle.seq == 1,
                ResponseCycle.started_at >= since,
                ResponseCycle.started_at < until,
            )
        )
    ).all()
    times = sorted(r.response_seconds for r in rows if r.response_seconds is not None)

    def breach(r: Row) -> bool:
        # A waiting case whose deadline passed is a breach now, even before the scheduler ran.
        if r.response_seconds is None:
            return r.breached or r.due_at <= now
        return r.breached or r.response_seconds > r.target_seconds

    with_target = [r for r in rows if r.target_seconds is not None]
    breaches = sum(breach(r) for r in with_target)
    # Decided: answered, or past the deadline. Waiting cases still in time count for neither.
    decided = sum(r.response_seconds is not None or breach(r) for r in with_target)
    return ResponseTimeStats(
        since=since,
        until=until,
        cases=len(rows),
        answered=len(times),
        unanswered=len(rows) - len(times),
        first_response_seconds=Percentiles(
            p50=percentile_cont(times, 0.5),
            p90=percentile_cont(times, 0.9),
            p95=percentile_cont(times, 0.95),
            mean=sum(times) / len(times) if times else None,
        ),
        # Share of decided cases (answered, or past their deadline) that met the target.
        within_target_ratio=(decided - breaches) / decided if decided else None,
        breaches=breaches,
    )
