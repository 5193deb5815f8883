"""The shapes the stats API answers with (and their OpenAPI examples)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from services.alert.stats.query import KeyValue

_PCT = {"p50": 95.0, "p90": 610.5, "p95": 902.0, "p99": 1450.2, "mean": 240.7}
_LAG = {"p50": 1.2, "p90": 3.9, "p95": 6.0, "p99": 14.8, "mean": 2.1}
_FIGURES = {
    "cases": 120,
    "cycles": 120,
    "answered": 112,
    "unanswered": 8,
    "response_seconds": _PCT,
    "with_target": 110,
    "decided": 106,
    "within_target": 97,
    "within_target_ratio": 0.915,
    "breaches": 9,
    "ingest_lag_seconds": _LAG,
}


class Percentiles(BaseModel):
    """Exact, linearly interpolated percentiles (like PostgreSQL's percentile_cont), in s."""

    model_config = ConfigDict(json_schema_extra={"examples": [_PCT]})

    p50: float | None = None
    p90: float | None = None
    p95: float | None = None
    p99: float | None = None
    mean: float | None = None


class Figures(BaseModel):
    """Figures of the response cycles (of the requested kind) that started in the range."""

    cases: int = Field(description="Distinct cases with a cycle in the range")
    cycles: int = Field(description="Response cycles (equals cases for kind=first)")
    answered: int
    unanswered: int
    response_seconds: Percentiles = Field(
        description="Response time of the answered cycles: wall clock, or counted business "
        "time minus pauses with clock=business"
    )
    with_target: int = Field(description="Cycles that had a target")
    decided: int = Field(description="Cycles with a target that were answered or breached")
    within_target: int
    within_target_ratio: float | None = Field(
        description="within_target / decided; null when nothing was decided"
    )
    breaches: int = Field(
        description="Answered after the deadline, breach fired, or waiting past the deadline"
    )
    ingest_lag_seconds: Percentiles = Field(
        description="ingested_at - created_at of the post that opened each cycle"
    )


class Group(Figures):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"key": {"source": "twitter"}, **_FIGURES}]}
    )

    key: dict[str, KeyValue] = Field(description="The group's value of each group_by field")


class ResponseTimesReport(Figures):
    """Totals over everything that matched, and one entry per group."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "since": "2026-11-20T00:00:00Z",
                    "until": "2026-11-27T00:00:00Z",
                    "kind": "first",
                    "clock": "wall",
                    "tz": "UTC",
                    "group_by": ["source"],
                    "filters": {"brand": ["acme"]},
                    **_FIGURES,
                    "first_response_seconds": _PCT,
                    "groups": [{"key": {"source": "twitter"}, **_FIGURES}],
                }
            ]
        }
    )

    since: datetime
    until: datetime
    kind: str
    clock: str
    tz: str
    group_by: list[str]
    filters: dict[str, list[KeyValue]]
    first_response_seconds: Percentiles | None = Field(
        description="Same as response_seconds for kind=first (kept for older clients); "
        "null for kind=next"
    )
    groups: list[Group]


class Point(Figures):
    start: datetime = Field(description="The interval's start, in the requested tz")
    end: datetime


class Timeseries(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "since": "2026-11-26T00:00:00Z",
                    "until": "2026-11-27T00:00:00Z",
                    "interval": "hour",
                    "kind": "first",
                    "clock": "wall",
                    "tz": "UTC",
                    "filters": {},
                    "points": [
                        {"start": "2026-11-26T00:00:00Z", "end": "2026-11-26T01:00:00Z"} | _FIGURES
                    ],
                }
            ]
        }
    )

    since: datetime
    until: datetime
    interval: str
    kind: str
    clock: str
    tz: str
    filters: dict[str, list[KeyValue]]
    points: list[Point] = Field(description="Every interval of the range, empty ones included")


STAGES = ("not_warned", "warned", "breached", "paused")
TIME_LEFT_BUCKETS = (
    "overdue",
    "under_15m",
    "15m_to_1h",
    "1h_to_4h",
    "4h_to_24h",
    "over_24h",
    "no_target",
    "paused",
)


class BacklogCase(BaseModel):
    case_id: int
    conversation_id: str
    source: str
    brand: str
    team: str | None
    assignee: str | None
    priority: str
    cycle: int
    kind: str
    started_at: datetime
    waiting_seconds: float
    due_at: datetime | None
    time_left_seconds: float | None = Field(description="Wall-clock seconds to the deadline")
    stage: str = Field(description=" | ".join(STAGES))
    time_left: str = Field(description=" | ".join(TIME_LEFT_BUCKETS))


class Backlog(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "now": "2026-11-27T10:00:00Z",
                    "open": 3,
                    "filters": {},
                    "by_stage": {"not_warned": 1, "warned": 1, "breached": 1, "paused": 0},
                    "by_time_left": {
                        "overdue": 1,
                        "under_15m": 1,
                        "15m_to_1h": 0,
                        "1h_to_4h": 1,
                        "4h_to_24h": 0,
                        "over_24h": 0,
                        "no_target": 0,
                        "paused": 0,
                    },
                    "by_stage_and_time_left": {"breached": {"overdue": 1}},
                    "truncated": False,
                    "cases": [
                        {
                            "case_id": 41,
                            "conversation_id": "twitter:1861",
                            "source": "twitter",
                            "brand": "acme",
                            "team": "care",
                            "assignee": "ann",
                            "priority": "P1",
                            "cycle": 1,
                            "kind": "first",
                            "started_at": "2026-11-27T09:40:00Z",
                            "waiting_seconds": 1200.0,
                            "due_at": "2026-11-27T09:55:00Z",
                            "time_left_seconds": -300.0,
                            "stage": "breached",
                            "time_left": "overdue",
                        }
                    ],
                }
            ]
        }
    )

    now: datetime
    open: int
    filters: dict[str, list[KeyValue]]
    by_stage: dict[str, int]
    by_time_left: dict[str, int]
    by_stage_and_time_left: dict[str, dict[str, int]] = Field(
        description="Counts per stage and time-left bucket (non-zero cells only)"
    )
    truncated: bool = Field(description="True when more open cases exist than `limit`")
    cases: list[BacklogCase] = Field(description="Oldest wait first")
