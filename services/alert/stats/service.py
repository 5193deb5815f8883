"""Response-time statistics over the response cycles that started in a time range.

Two ways to the same numbers:

- **in the database** (PostgreSQL): one ``GROUP BY`` with
  ``percentile_cont(ARRAY[...]) WITHIN GROUP (ORDER BY ...)``, counts with ``FILTER``;
- **in Python** (SQLite): the cycles of the range are fetched with their group keys, and
  each group's sorted values are interpolated exactly like percentile_cont.

The response time on the wall clock is ``response_seconds``; on the business clock it is
``business_response_seconds``, which ``answer()`` stores with the answer (counted time in the
calendar of the case's policy version, less the paused time): both clocks read one column.

The rules are the same in both: a cycle with a target **breaches** when its breach fired,
when it was answered after its deadline, or when it still waits (unpaused) past the
deadline; it is **decided** when answered or breached; ``within_target_ratio`` is
(decided - breaches) / decided. Ingest lag is the opening post's ``ingested_at -
created_at``. Time keys (day, week, hour_of_week, intervals) are local times in ``tz``.

Cost: the cycles of the range are read from ``response_cycles`` alone: the case's source,
brand, language, team and assignee and the opening post's sentiment, complaint score and
lag are copied onto the cycle (shared/db/models.py keeps the copies), so no report joins
the cases. On PostgreSQL totals and groups come from one scan
(``GROUPING SETS``), and ``cases`` of first responses is ``count(*)`` (a case has one first
cycle, a unique index says so) instead of a distinct count. Percentiles stay exact, so the
work still grows with the number of cycles in the range: each group's values are sorted
once (in memory up to the ``stats_work_mem`` setting).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    ColumnElement,
    DateTime,
    Float,
    Integer,
    Select,
    and_,
    cast,
    extract,
    false,
    func,
    literal,
    or_,
    select,
    tuple_,
    type_coerce,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession

from services.alert.stats.percentiles import FRACTIONS, summary
from services.alert.stats.query import (
    COMPLAINT_THRESHOLD,
    TIME_FIELDS,
    KeyValue,
    StatsQuery,
    aware,
    bucket_starts,
    local_naive,
    time_key,
    truncate,
)
from services.alert.stats.schemas import (
    Figures,
    Group,
    Percentiles,
    Point,
    ResponseTimesReport,
    Timeseries,
)
from shared.config import get_settings
from shared.db.models import Case, ResponseCycle, Team, TeamMember

BUCKET = "_bucket"  # the timeseries' interval, an internal group key
Key = tuple[KeyValue | datetime, ...]

RC = ResponseCycle


# ----- the columns every field reads -------------------------------------------------------


def text_column(name: str) -> ColumnElement[Any]:
    return {
        "source": RC.source,
        "brand": RC.brand,
        "team": Team.name,
        "assignee": TeamMember.handle,
        "priority": RC.priority,
        "language": RC.language,
        "sentiment": RC.sentiment,
    }[name]


def complaint_key(score: float | None) -> bool | None:
    return None if score is None else score >= COMPLAINT_THRESHOLD


def filter_clause(name: str, values: Sequence[KeyValue]) -> ColumnElement[bool]:
    """SQL for ``name IN values`` (any field but the time ones)."""
    if name == "complaint":
        score = RC.complaint_score
        parts = [score >= COMPLAINT_THRESHOLD if v else score < COMPLAINT_THRESHOLD for v in values]
        return or_(*parts) if parts else false()
    return text_column(name).in_(list(values))


def joined(stmt: Select[Any], fields: Iterable[str] = (), *, case: bool = False) -> Select[Any]:
    """Cycles, with their case when ``case`` (the backlog's), and the names of their team
    and assignee (small tables) when a field needs them."""
    names = set(fields)
    stmt = stmt.select_from(RC)
    if case:
        stmt = stmt.join(Case, Case.id == RC.case_id)
    if "team" in names:
        stmt = stmt.outerjoin(Team, Team.id == RC.team_id)
    if "assignee" in names:
        stmt = stmt.outerjoin(TeamMember, TeamMember.id == RC.assignee_id)
    return stmt


def scope(
    stmt: Select[Any],
    query: StatsQuery,
    *,
    time_filters_in_sql: bool,
    fields: Iterable[str] = (),
) -> Select[Any]:
    """The cycles of the query's kind and range that pass its filters; ``fields`` (group
    keys) say which joins the selected columns need."""
    stmt = joined(stmt, [*fields, *query.filters]).where(
        RC.kind == query.kind, RC.started_at >= query.since, RC.started_at < query.until
    )
    for name, values in query.filters.items():
        if name in TIME_FIELDS:
            if time_filters_in_sql:
                stmt = stmt.where(pg_time_key(name, query.tz).in_(list(values)))
        else:
            stmt = stmt.where(filter_clause(name, values))
    return stmt


def breach_clause(now: datetime) -> ColumnElement[bool]:
    return and_(
        RC.target_seconds.is_not(None),
        or_(
            RC.breached.is_(True),
            and_(RC.answered_at.is_not(None), RC.due_at.is_not(None), RC.answered_at > RC.due_at),
            and_(
                RC.answered_at.is_(None),
                RC.paused_at.is_(None),
                RC.due_at.is_not(None),
                RC.due_at <= now,
            ),
        ),
    )


def is_breach(
    target: float | None,
    breached: bool,
    answered_at: datetime | None,
    due_at: datetime | None,
    paused_at: datetime | None,
    now: datetime,
) -> bool:
    """The Python twin of ``breach_clause``."""
    if target is None:
        return False
    if breached:
        return True
    if due_at is None:
        return False
    if answered_at is not None:
        return answered_at > due_at
    return paused_at is None and due_at <= now


# ----- PostgreSQL: time keys and aggregates in SQL -----------------------------------------


def _pg_local(tz: str) -> ColumnElement[Any]:
    return func.timezone(tz, RC.started_at)  # started_at AT TIME ZONE tz: local, naive


def pg_time_key(name: str, tz: str) -> ColumnElement[Any]:
    local = _pg_local(tz)
    if name == "day":
        return func.to_char(local, "YYYY-MM-DD")
    if name == "week":
        return func.to_char(func.date_trunc("week", local), "YYYY-MM-DD")
    if name == "hour_of_week":
        return cast((extract("isodow", local) - 1) * 24 + extract("hour", local), Integer)
    raise KeyError(name)


def pg_key_column(name: str, query: StatsQuery, interval: str | None) -> ColumnElement[Any]:
    if name == BUCKET:
        assert interval is not None
        return type_coerce(func.date_trunc(interval, _pg_local(query.tz)), DateTime())
    if name in TIME_FIELDS:
        return pg_time_key(name, query.tz)
    if name == "complaint":
        return RC.complaint_score >= COMPLAINT_THRESHOLD
    return text_column(name)


def _pct(expr: ColumnElement[Any]) -> ColumnElement[Any]:
    fractions = literal(list(FRACTIONS), ARRAY(Float))
    return type_coerce(func.percentile_cont(fractions).within_group(expr), ARRAY(Float))


def response_column(clock: str) -> ColumnElement[Any]:
    """The response time on ``clock`` (None while unanswered)."""
    return RC.business_response_seconds if clock == "business" else RC.response_seconds


def _aggregates(now: datetime, kind: str, clock: str) -> list[ColumnElement[Any]]:
    breach = breach_clause(now)
    value = response_column(clock)
    has_target = RC.target_seconds.is_not(None)
    decided = and_(has_target, or_(RC.answered_at.is_not(None), breach))
    lag = RC.ingest_lag_seconds
    # One first cycle per case (uq_response_cycles_first): no distinct count needed.
    cases = func.count() if kind == "first" else func.count(func.distinct(RC.case_id))
    return [
        cases.label("cases"),
        func.count().label("cycles"),
        func.count(RC.answered_at).label("answered"),
        _pct(value).label("rt_pct"),
        func.avg(value).label("rt_mean"),
        func.count().filter(has_target).label("with_target"),
        func.count().filter(decided).label("decided"),
        func.count().filter(breach).label("breaches"),
        _pct(lag).label("lag_pct"),
        func.avg(lag).label("lag_mean"),
    ]


def _pcts(values: list[float] | None, mean: float | None) -> Percentiles:
    values = values or [None] * len(FRACTIONS)  # type: ignore[list-item]
    named = {f"p{round(f * 100)}": v for f, v in zip(FRACTIONS, values, strict=True)}
    return Percentiles(**named, mean=None if mean is None else float(mean))


def _figures_from_sql(row: Any) -> Figures:
    breaches, decided = row.breaches, row.decided
    return Figures(
        cases=row.cases,
        cycles=row.cycles,
        answered=row.answered,
        unanswered=row.cycles - row.answered,
        response_seconds=_pcts(row.rt_pct, row.rt_mean),
        with_target=row.with_target,
        decided=decided,
        within_target=decided - breaches,
        within_target_ratio=(decided - breaches) / decided if decided else None,
        breaches=breaches,
        ingest_lag_seconds=_pcts(row.lag_pct, row.lag_mean),
    )


async def _in_database(
    session: AsyncSession,
    query: StatsQuery,
    now: datetime,
    fields: Sequence[str],
    interval: str | None,
) -> tuple[Figures, dict[Key, Figures]]:
    """Totals and groups from one scan: ``GROUPING SETS ((), (keys))`` (the timeseries needs
    no totals: a plain ``GROUP BY``)."""
    names = [*fields, BUCKET] if interval else list(fields)
    aggregates = _aggregates(now, query.kind, query.clock)
    # Memory for each sort of the report (its percentiles sort every value of the range, per
    # group and for the totals), for its transaction only; larger sorts spill to disk.
    work_mem = get_settings().stats_work_mem
    await session.execute(select(func.set_config("work_mem", work_mem, True)))
    if not names:
        stmt = scope(select(*aggregates), query, time_filters_in_sql=True)
        return _figures_from_sql((await session.execute(stmt)).one()), {}
    columns = [pg_key_column(n, query, interval).label(f"k{i}") for i, n in enumerate(names)]
    keys = [c.element for c in columns]  # type: ignore[attr-defined]
    is_total = func.grouping(keys[0]).label("is_total")
    stmt = scope(
        select(*columns, is_total, *aggregates), query, time_filters_in_sql=True, fields=names
    )
    if interval:
        stmt = stmt.group_by(*keys)
    else:
        stmt = stmt.group_by(func.grouping_sets(tuple_(), tuple_(*keys)))
    totals = figures([])  # replaced by the totals row (the timeseries has none)
    groups: dict[Key, Figures] = {}
    for row in (await session.execute(stmt)).all():
        if row.is_total:
            totals = _figures_from_sql(row)
        else:
            groups[tuple(row[: len(columns)])] = _figures_from_sql(row)
    return totals, groups


# ----- Python: the same figures from the cycles themselves ----------------------------------


@dataclass(frozen=True)
class _Cycle:
    case_id: int
    value: float | None  # the response time on the requested clock; None while unanswered
    answered: bool
    with_target: bool
    breach: bool
    lag: float | None


def figures(cycles: Iterable[_Cycle]) -> Figures:
    cycles = list(cycles)
    values = [c.value for c in cycles if c.value is not None]
    lags = [c.lag for c in cycles if c.lag is not None]
    answered = sum(c.answered for c in cycles)
    breaches = sum(c.breach for c in cycles)
    decided = sum(c.with_target and (c.answered or c.breach) for c in cycles)
    return Figures(
        cases=len({c.case_id for c in cycles}),
        cycles=len(cycles),
        answered=answered,
        unanswered=len(cycles) - answered,
        response_seconds=Percentiles(**summary(values)),
        with_target=sum(c.with_target for c in cycles),
        decided=decided,
        within_target=decided - breaches,
        within_target_ratio=(decided - breaches) / decided if decided else None,
        breaches=breaches,
        ingest_lag_seconds=Percentiles(**summary(lags)),
    )


async def _in_python(
    session: AsyncSession,
    query: StatsQuery,
    now: datetime,
    fields: Sequence[str],
    interval: str | None,
) -> tuple[Figures, dict[Key, Figures]]:
    sql_fields = [f for f in fields if f not in TIME_FIELDS and f != "complaint"]
    stmt = select(
        RC.case_id,
        RC.started_at,
        RC.answered_at,
        response_column(query.clock).label("value"),
        RC.target_seconds,
        RC.due_at,
        RC.breached,
        RC.paused_at,
        RC.ingest_lag_seconds,
        RC.complaint_score,
        *[text_column(f).label(f"f_{f}") for f in sql_fields],
    )
    zone = query.zone
    time_filters = {k: v for k, v in query.filters.items() if k in TIME_FIELDS}
    groups: dict[Key, list[_Cycle]] = defaultdict(list)
    everything: list[_Cycle] = []
    stmt = scope(stmt, query, time_filters_in_sql=False, fields=sql_fields)
    rows = (await session.execute(stmt)).all()
    for r in rows:
        if any(time_key(n, r.started_at, zone) not in vs for n, vs in time_filters.items()):
            continue
        cycle = _Cycle(
            case_id=r.case_id,
            value=None if r.answered_at is None else r.value,
            answered=r.answered_at is not None,
            with_target=r.target_seconds is not None,
            breach=is_breach(
                r.target_seconds, r.breached, r.answered_at, r.due_at, r.paused_at, now
            ),
            lag=r.ingest_lag_seconds,
        )
        everything.append(cycle)
        if fields or interval:
            key: list[KeyValue | datetime] = []
            for f in fields:
                if f in TIME_FIELDS:
                    key.append(time_key(f, r.started_at, zone))
                elif f == "complaint":
                    key.append(complaint_key(r.complaint_score))
                else:
                    key.append(getattr(r, f"f_{f}"))
            if interval:
                key.append(truncate(local_naive(r.started_at, zone), interval))
            groups[tuple(key)].append(cycle)
    return figures(everything), {k: figures(v) for k, v in groups.items()}


# ----- the reports -------------------------------------------------------------------------


def _in_sql(session: AsyncSession, query: StatsQuery, in_database: bool | None) -> bool:
    if in_database is not None:
        return in_database
    return session.get_bind().dialect.name == "postgresql"


async def _compute(
    session: AsyncSession,
    query: StatsQuery,
    now: datetime,
    fields: Sequence[str],
    interval: str | None,
    in_database: bool | None,
) -> tuple[Figures, dict[Key, Figures]]:
    if _in_sql(session, query, in_database):
        return await _in_database(session, query, now, fields, interval)
    return await _in_python(session, query, now, fields, interval)


def _sort_key(key: Key) -> tuple[tuple[bool, Any], ...]:
    return tuple((v is None, v if v is not None else 0) for v in key)


def _filters_out(query: StatsQuery) -> dict[str, list[KeyValue]]:
    return {k: list(v) for k, v in query.filters.items()}


async def report(
    session: AsyncSession,
    query: StatsQuery,
    now: datetime,
    *,
    in_database: bool | None = None,
) -> ResponseTimesReport:
    """Totals and, with ``group_by``, one entry per group (sorted by key, nulls last).

    ``in_database`` forces one path (None: SQL on PostgreSQL, Python on SQLite)."""
    totals, groups = await _compute(session, query, now, query.group_by, None, in_database)
    return ResponseTimesReport(
        since=query.since,
        until=query.until,
        kind=query.kind,
        clock=query.clock,
        tz=query.tz,
        group_by=list(query.group_by),
        filters=_filters_out(query),
        **totals.model_dump(),
        first_response_seconds=totals.response_seconds if query.kind == "first" else None,
        groups=[
            Group(key=dict(zip(query.group_by, key, strict=True)), **fig.model_dump())
            for key, fig in sorted(groups.items(), key=lambda kv: _sort_key(kv[0]))
        ],
    )


def _empty() -> Figures:
    return figures([])


def _next_start(start: datetime, interval: str) -> datetime:
    return start + {"hour": timedelta(hours=1), "day": timedelta(days=1)}.get(
        interval, timedelta(days=7)
    )


async def timeseries(
    session: AsyncSession,
    query: StatsQuery,
    interval: str,
    now: datetime,
    *,
    in_database: bool | None = None,
) -> Timeseries:
    """The figures per interval of the range, empty intervals included (for charts)."""
    zone: ZoneInfo = query.zone
    _, groups = await _compute(session, query, now, (), interval, in_database)
    by_start = {key[-1]: fig for key, fig in groups.items()}
    points = []
    for start in bucket_starts(query.since, query.until, interval, zone):
        fig = by_start.get(start) or _empty()
        points.append(
            Point(
                start=aware(start, zone),
                end=aware(_next_start(start, interval), zone),
                **fig.model_dump(),
            )
        )
    return Timeseries(
        since=query.since,
        until=query.until,
        interval=interval,
        kind=query.kind,
        clock=query.clock,
        tz=query.tz,
        filters=_filters_out(query),
        points=points,
    )


async def response_times(
    session: AsyncSession, since: datetime, until: datetime, now: datetime
) -> ResponseTimesReport:
    """First-response figures of the cycles that started in [since, until), ungrouped."""
    return await report(session, StatsQuery(since=since, until=until), now)


__all__ = [
    "Figures",
    "ResponseTimesReport",
    "Timeseries",
    "figures",
    "is_breach",
    "report",
    "response_times",
    "timeseries",
]
