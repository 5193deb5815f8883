"""Stats for managers: response times (grouped, filtered, JSON or CSV), a timeseries for
charts, the backlog of open cases, and ``/metrics`` for Prometheus.

Every route needs a viewer token; ``/metrics`` also admits clients from the networks in
``THIRDRING_METRICS_ALLOW`` without one. Parameters are checked here and a bad one is a
422 whose ``detail`` starts with its name, e.g. ``"group_by: unknown field 'colour' …"``.
"""

from __future__ import annotations

import ipaddress
from dataclasses import replace
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Security
from fastapi.responses import Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.alert import metrics
from services.alert.access import Principal, require
from services.alert.access.deps import TOKEN_HEADER
from services.alert.stats.backlog import backlog
from services.alert.stats.export import report_csv, timeseries_csv
from services.alert.stats.query import (
    CLOCKS,
    FIELDS,
    FORMATS,
    INTERVALS,
    KINDS,
    TIME_FIELDS,
    ParamError,
    StatsQuery,
    check_unknown_params,
    parse_choice,
    parse_filters,
    parse_group_by,
    parse_range,
    parse_tz,
)
from services.alert.stats.schemas import Backlog, ResponseTimesReport, Timeseries
from services.alert.stats.service import report, timeseries
from shared import consumer_metrics
from shared.config import get_settings
from shared.events import utcnow

router = APIRouter(tags=["stats"])
Viewer = Annotated[Principal, Depends(require("viewer"))]
_viewer = require("viewer")

CSV = "text/csv; charset=utf-8"
_CSV_EXAMPLE = (
    "source,cases,cycles,answered,unanswered,response_p50,response_p90,response_p95,"
    "response_p99,response_mean,with_target,decided,within_target,within_target_ratio,"
    "breaches,ingest_lag_p50,ingest_lag_p90,ingest_lag_p95,ingest_lag_p99,ingest_lag_mean\r\n"
    "twitter,120,120,112,8,95.0,610.5,902.0,1450.2,240.7,110,106,97,0.915,9,"
    "1.2,3.9,6.0,14.8,2.1\r\n"
)
_CSV_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {CSV: {"schema": {"type": "string"}, "example": _CSV_EXAMPLE}},
        "description": "JSON, or CSV with format=csv (or Accept: text/csv)",
    },
    422: {
        "description": "A bad parameter; detail names it",
        "content": {
            "application/json": {"example": {"detail": "group_by: unknown field 'colour'"}}
        },
    },
}


def _bad(exc: ParamError) -> HTTPException:
    return HTTPException(422, detail=str(exc))


Since = Annotated[
    str | None,
    Query(
        description="Start, ISO 8601 with a zone; default: 7 days before until",
        json_schema_extra={"format": "date-time"},
        openapi_examples={"utc": {"value": "2026-11-20T00:00:00Z"}},
    ),
]
Until = Annotated[
    str | None,
    Query(
        description="End (exclusive), ISO 8601 with a zone; default: now",
        json_schema_extra={"format": "date-time"},
        openapi_examples={"utc": {"value": "2026-11-27T00:00:00Z"}},
    ),
]
Filter = Annotated[
    str | None,
    Query(description="Only these values (comma list = any of them)"),
]


def _choice_query(choices: tuple[str, ...], description: str) -> Any:
    return Query(description=description, json_schema_extra={"enum": list(choices)})


KindQ = Annotated[str | None, _choice_query(KINDS, "Response cycles: first (default) or next")]
ClockQ = Annotated[
    str | None,
    _choice_query(
        CLOCKS,
        "wall: response_seconds (default); business: time counted in the policy's calendar "
        "between start and answer, minus pauses",
    ),
]
TzQ = Annotated[
    str | None,
    Query(
        description="IANA time zone of day, week, hour_of_week and intervals; default UTC",
        openapi_examples={"utc": {"value": "UTC"}, "rome": {"value": "Europe/Rome"}},
    ),
]
FormatQ = Annotated[
    str | None, _choice_query(FORMATS, "json (default) or csv; Accept: text/csv works too")
]

_COMMON = {"since", "until", "kind", "clock", "tz", "format"}


def _filter_params(
    source: Filter = None,
    brand: Filter = None,
    team: Filter = None,
    assignee: Filter = None,
    priority: Filter = None,
    language: Filter = None,
    sentiment: Filter = None,
    complaint: Filter = None,
    day: Filter = None,
    week: Filter = None,
    hour_of_week: Filter = None,
) -> dict[str, str | None]:
    return {
        "source": source,
        "brand": brand,
        "team": team,
        "assignee": assignee,
        "priority": priority,
        "language": language,
        "sentiment": sentiment,
        "complaint": complaint,
        "day": day,
        "week": week,
        "hour_of_week": hour_of_week,
    }


Filters = Annotated[dict[str, str | None], Depends(_filter_params)]


def _query(
    request: Request,
    known: set[str],
    since: str | None,
    until: str | None,
    kind: str | None,
    clock: str | None,
    tz: str | None,
    filters: dict[str, str | None],
) -> StatsQuery:
    try:
        check_unknown_params(list(request.query_params.keys()), known)
        start, end = parse_range(since, until, utcnow())
        return StatsQuery(
            since=start,
            until=end,
            kind=parse_choice(kind, "kind", KINDS, "first"),  # type: ignore[arg-type]
            clock=parse_choice(clock, "clock", CLOCKS, "wall"),  # type: ignore[arg-type]
            filters=parse_filters(filters),
            tz=parse_tz(tz),
        )
    except ParamError as exc:
        raise _bad(exc) from None


def _wants_csv(request: Request, fmt: str | None) -> bool:
    try:
        chosen = parse_choice(fmt, "format", FORMATS, "")
    except ParamError as exc:
        raise _bad(exc) from None
    if chosen:
        return chosen == "csv"
    return "text/csv" in request.headers.get("accept", "")


def _sessions(request: Request) -> async_sessionmaker[AsyncSession]:
    return request.app.state.sessions


@router.get(
    "/api/v1/stats/response-times",
    response_model=ResponseTimesReport,
    responses=_CSV_RESPONSE,
    summary="Response-time figures, grouped and filtered",
)
async def response_times_route(
    request: Request,
    _: Viewer,
    filters: Filters,
    since: Since = None,
    until: Until = None,
    group_by: Annotated[
        str | None,
        Query(
            description=f"Comma list of: {', '.join(FIELDS)}",
            openapi_examples={
                "none": {"summary": "totals only", "value": ""},
                "source": {"summary": "per channel", "value": "source"},
                "team_priority": {"summary": "per team and priority", "value": "team,priority"},
                "heatmap": {"summary": "hour of the week (heat map)", "value": "hour_of_week"},
            },
        ),
    ] = None,
    kind: KindQ = None,
    clock: ClockQ = None,
    tz: TzQ = None,
    format: FormatQ = None,
) -> Any:
    """For the response cycles whose clock started in [since, until): cases, answered,
    unanswered, response-time percentiles (p50/p90/p95/p99, mean; exact for the range),
    share within target, breaches, and ingest lag of the opening posts.

    Totals are at the top level; with `group_by`, `groups` holds one entry per combination
    of values (nulls last). `first_response_seconds` repeats `response_seconds` for
    `kind=first` (older clients read it)."""
    known = _COMMON | {"group_by"} | set(FIELDS)
    query = _query(request, known, since, until, kind, clock, tz, filters)
    try:
        query = replace(query, group_by=parse_group_by(group_by))
    except ParamError as exc:
        raise _bad(exc) from None
    csv_out = _wants_csv(request, format)
    async with _sessions(request)() as session:
        result = await report(session, query, utcnow())
    if csv_out:
        return Response(report_csv(result), media_type=CSV)
    return result


@router.get(
    "/api/v1/stats/timeseries",
    response_model=Timeseries,
    responses=_CSV_RESPONSE,
    summary="Response-time figures per hour, day or week",
)
async def timeseries_route(
    request: Request,
    _: Viewer,
    filters: Filters,
    interval: Annotated[
        str | None, _choice_query(INTERVALS, "Interval of the points (default day)")
    ] = None,
    since: Since = None,
    until: Until = None,
    kind: KindQ = None,
    clock: ClockQ = None,
    tz: TzQ = None,
    format: FormatQ = None,
) -> Any:
    """The figures of `/stats/response-times` for every interval of the range, empty ones
    included (zero counts, null percentiles), in order. Intervals are local to `tz`."""
    known = _COMMON | {"interval"} | set(FIELDS)
    query = _query(request, known, since, until, kind, clock, tz, filters)
    try:
        chosen = parse_choice(interval, "interval", INTERVALS, "day")
    except ParamError as exc:
        raise _bad(exc) from None
    csv_out = _wants_csv(request, format)
    async with _sessions(request)() as session:
        result = await timeseries(session, query, chosen, utcnow())
    if csv_out:
        return Response(timeseries_csv(result), media_type=CSV)
    return result


BACKLOG_FIELDS = tuple(f for f in FIELDS if f not in TIME_FIELDS)


@router.get("/api/v1/stats/backlog", response_model=Backlog, summary="Open cases now")
async def backlog_route(
    request: Request,
    _: Viewer,
    source: Filter = None,
    brand: Filter = None,
    team: Filter = None,
    assignee: Filter = None,
    priority: Filter = None,
    language: Filter = None,
    sentiment: Filter = None,
    complaint: Filter = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="Cases listed at most")] = 100,
) -> Backlog:
    """Open cases by stage (not_warned, warned, breached, paused) and time left to the
    deadline (overdue, under_15m, 15m_to_1h, 1h_to_4h, 4h_to_24h, over_24h, no_target,
    paused), with counts per bucket; the cases listed oldest wait first."""
    raw = {
        "source": source,
        "brand": brand,
        "team": team,
        "assignee": assignee,
        "priority": priority,
        "language": language,
        "sentiment": sentiment,
        "complaint": complaint,
    }
    try:
        check_unknown_params(list(request.query_params.keys()), {*BACKLOG_FIELDS, "limit"})
        filters = parse_filters(raw, BACKLOG_FIELDS)
    except ParamError as exc:
        raise _bad(exc) from None
    async with _sessions(request)() as session:
        return await backlog(session, utcnow(), filters, limit)


# ----- /metrics -------------------------------------------------------------------------

_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <token>")
_header = APIKeyHeader(name=TOKEN_HEADER, auto_error=False, description="The token itself")


def allowed_networks(request: Request) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """``app.state.metrics_allow`` if set (tests, embedders), else THIRDRING_METRICS_ALLOW."""
    spec = getattr(request.app.state, "metrics_allow", None)
    if spec is None:
        spec = get_settings().metrics_allow
    return [ipaddress.ip_network(p.strip(), strict=False) for p in spec.split(",") if p.strip()]


def client_allowed(request: Request) -> bool:
    host = request.client.host if request.client else None
    if not host:
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return any(address in net for net in allowed_networks(request))


async def metrics_access(
    request: Request,
    bearer: HTTPAuthorizationCredentials | None = Security(_bearer),
    header: str | None = Security(_header),
) -> None:
    """A client in the allowed networks, or a viewer token (401/403 otherwise)."""
    if client_allowed(request):
        return
    await _viewer(request, bearer, header)


@router.get(
    "/metrics",
    tags=["metrics"],
    response_class=Response,
    dependencies=[Depends(metrics_access)],
    responses={
        200: {
            "content": {
                metrics.CONTENT_TYPE: {
                    "example": "# TYPE thirdring_cases_open gauge\n"
                    'thirdring_cases_open{priority="P1",source="twitter"} 3.0\n'
                }
            },
            "description": "Prometheus text exposition",
        }
    },
)
async def metrics_route(request: Request) -> Response:
    """Prometheus metrics computed from the database at scrape time (the same on every
    replica): open cases, breaches, time to first response, mentions and ingest lag per
    source; then this replica's own consumer metrics (``thirdring_consumer_*``: lag, batches,
    dead letters, errors). Needs a viewer token unless the client is in
    THIRDRING_METRICS_ALLOW."""
    async with _sessions(request)() as session:
        snap = await metrics.snapshot(session, utcnow())
    body = metrics.render(snap) + consumer_metrics.render()
    return Response(body, media_type=metrics.CONTENT_TYPE)
