"""The stats API over a real uvicorn server, on SQLite and PostgreSQL.

Known cycles are written straight into the tables (response times, targets, breaches,
business-time cycles across a weekend in a calendar policy); the expected figures are
computed here, independently (``statistics.quantiles(method="inclusive")`` is the same
linear interpolation as percentile_cont), and compared with what the API answers.
"""

from __future__ import annotations

import csv
import io
import statistics
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from services.alert.access import create_token
from services.alert.api.app import create_api_app
from services.alert.sla import clock
from services.alert.sla.calendars import Calendar
from services.alert.sla.policies import SlaPolicy
from services.alert.sla.store import save_policy
from services.alert.stats.counters import recount
from services.alert.stats.query import StatsQuery
from services.alert.stats.service import _in_sql, report
from shared.config import get_settings
from shared.db.engine import make_sessionmaker
from shared.db.models import Deadline, Mention, Team, TeamMember
from shared.events import utcnow
from tests.alert.stats_rows import case_row, cycle_row, mention_row
from tests.live_server import live_server

RT = "/api/v1/stats/response-times"
TS = "/api/v1/stats/timeseries"
BACKLOG = "/api/v1/stats/backlog"

NOW = utcnow()
# A Monday three weeks back, 00:00 UTC: the week the cycles below start in.
_d = (NOW - timedelta(days=21)).date()
T = datetime(_d.year, _d.month, _d.day, tzinfo=UTC) - timedelta(days=_d.weekday())
WEEK = {"since": T.isoformat(), "until": (T + timedelta(days=7)).isoformat()}

OFFICE = Calendar(
    name="office",
    timezone="UTC",
    windows={d: ["09:00-17:00"] for d in ("mon", "tue", "wed", "thu", "fri")},
)


@dataclass
class Spec:
    source: str
    priority: str
    start: datetime
    response: float | None  # wall seconds to the answer; None = waiting
    target: float | None
    breach: bool = False  # what the test expects, decided by hand
    lag: float = 1.0
    brand: str = "acme"
    sentiment: str = "negative"
    complaint: float = 0.9
    kind: str = "first"
    of: int | None = None  # a next cycle's case: the index of its first cycle
    breached_flag: bool = False
    paused: float = 0.0
    business: float | None = None  # counted business seconds, for the office policy
    assignee: bool = False
    ids: dict[str, int] = field(default_factory=dict)


H = timedelta(hours=1)
D = timedelta(days=1)


def specs() -> list[Spec]:
    return [
        # twitter, wall clock
        Spec("twitter", "P1", T + 9 * H, 30, 600, lag=1.0, assignee=True),
        Spec("twitter", "P1", T + 9.5 * H, 45, 600, lag=2.0, assignee=True),
        Spec("twitter", "P2", T + D + 10 * H, 60, 3600, lag=0.5),
        Spec(
            "twitter", "P2", T + D + 14 * H, 120, 3600, lag=3.0, sentiment="neutral", complaint=0.2
        ),
        Spec(
            "twitter", "P1", T + 2 * D + 9 * H, 900, 600, breach=True, breached_flag=True, lag=10.0
        ),
        Spec("twitter", "P4", T + 2 * D + 9.25 * H, 300, None, lag=1.5),
        # facebook
        Spec("facebook", "P1", T + 9 * H, 10, 600, lag=4.0, brand="zeta"),
        Spec("facebook", "P2", T + 3 * D + 16 * H, 5000, 3600, breach=True, lag=0.25),
        Spec("facebook", "P1", T + 4 * D + 8 * H, None, 600, breach=True, lag=6.0),
        Spec("facebook", "P4", T + 4 * D + 9 * H, None, None, lag=2.5),
        # business time (office: Mon-Fri 09-17 UTC, P2 = 1 h): Fri 16:30 -> Mon 09:30, 65 h
        Spec("twitter", "P2", T + 4 * D + 16.5 * H, 65 * 3600, 3600, business=3600, lag=0.75),
        # Sat 11:00 -> Mon 10:10, 10 minutes paused: 70 min counted - 10 = 1 h (47 h 10 min)
        Spec(
            "twitter",
            "P2",
            T + 5 * D + 11 * H,
            47 * 3600 + 600,
            3600,
            paused=600,
            business=3600,
            lag=0.5,
        ),
        # not in the range: before it
        Spec("twitter", "P1", T - H, 5, 600, lag=1.0),
        # a next-response cycle of the first case
        Spec("twitter", "P1", T + 10 * H, 200, 600, kind="next", of=0, lag=0.2),
    ]


async def _insert(sessions: async_sessionmaker[AsyncSession], all_specs: list[Spec]) -> None:
    async with sessions() as s, s.begin():
        office = SlaPolicy(name="office", calendar=OFFICE, targets={"P1": 900, "P2": 3600})
        policy = await save_policy(s, office, NOW)
        team = Team(
            name="care",
            calendar=None,
            capacity=None,
            reassign_after_seconds=None,
            channels={},
            active=True,
            updated_at=NOW,
        )
        s.add(team)
        await s.flush()
        ann = TeamMember(
            team_id=team.id,
            handle="ann",
            name="Ann",
            email=None,
            role="agent",
            active=True,
            last_assigned_at=None,
        )
        s.add(ann)
        await s.flush()
        for n, sp in enumerate(all_specs):
            event = f"00000000-0000-0000-0000-{n:012d}"
            s.add(_mention(event, sp))
            if sp.of is None:
                case = case_row(
                    f"conv-{n}",
                    sp.source,
                    sp.priority,
                    sp.start,
                    brand=sp.brand,
                    status="answered" if sp.response is not None else "open",
                    policy_id=policy.id if sp.business else None,
                    team_id=team.id if sp.assignee else None,
                    assignee_id=ann.id if sp.assignee else None,
                )
                s.add(case)
                await s.flush()
                sp.ids["case"] = case.id
                seq = 1
            else:
                sp.ids["case"] = all_specs[sp.of].ids["case"]
                seq = 2
            answered = None if sp.response is None else sp.start + timedelta(seconds=sp.response)
            # Business cycles are answered exactly at their deadline (in time).
            due = answered if sp.business else None
            if due is None and sp.target is not None:
                due = sp.start + timedelta(seconds=sp.target)
            cycle = cycle_row(
                sp.ids["case"],
                seq,
                sp.start,
                event,
                sp.priority,
                kind=sp.kind,
                target_seconds=sp.target,
                business_time=sp.business is not None,
                paused_seconds=sp.paused,
                due_at=due,
                answered_at=answered,
                response_seconds=sp.response,
                breached=sp.breached_flag,
            )
            if answered is not None:  # as answer() stores it: counted in the case's calendar
                cycle.business_response_seconds = clock.business_response_seconds(
                    cycle, office if sp.business else None, answered
                )
            s.add(cycle)
            await s.flush()
            sp.ids["cycle"] = cycle.id


def _mention(event: str, sp: Spec) -> Mention:
    return mention_row(
        event,
        sp.source,
        sp.start,
        lag=sp.lag,
        brand=sp.brand,
        sentiment=sp.sentiment,
        complaint=sp.complaint,
        priority=sp.priority,
    )


# ----- the expected figures, computed independently ---------------------------------------


def pct(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p90": None, "p95": None, "p99": None, "mean": None}
    if len(values) == 1:
        v = float(values[0])
        return {"p50": v, "p90": v, "p95": v, "p99": v, "mean": v}
    q = statistics.quantiles(values, n=100, method="inclusive")
    return {
        "p50": q[49],
        "p90": q[89],
        "p95": q[94],
        "p99": q[98],
        "mean": statistics.fmean(values),
    }


def expected(chosen: list[Spec], clock: str = "wall") -> dict[str, Any]:
    def value(sp: Spec) -> float | None:
        if sp.response is None:
            return None
        return sp.business if clock == "business" and sp.business else sp.response

    values = [v for sp in chosen if (v := value(sp)) is not None]
    decided = [
        sp for sp in chosen if sp.target is not None and (sp.response is not None or sp.breach)
    ]
    breaches = sum(sp.breach for sp in chosen)
    return {
        "cases": len({sp.ids["case"] for sp in chosen}),
        "cycles": len(chosen),
        "answered": len(values),
        "unanswered": len(chosen) - len(values),
        "response_seconds": pct(values),
        "with_target": sum(sp.target is not None for sp in chosen),
        "decided": len(decided),
        "breaches": breaches,
        "within_target_ratio": (len(decided) - breaches) / len(decided) if decided else None,
        "ingest_lag_seconds": pct([sp.lag for sp in chosen]),
    }


def assert_figures(got: dict[str, Any], want: dict[str, Any]) -> None:
    for name, value in want.items():
        if isinstance(value, dict):
            assert got[name] == pytest.approx(value, rel=1e-9), name
        else:
            assert got[name] == pytest.approx(value), name


def in_week(all_specs: list[Spec], kind: str = "first") -> list[Spec]:
    return [sp for sp in all_specs if sp.kind == kind and T <= sp.start < T + 7 * D]


def group(chosen: list[Spec], key: Callable[[Spec], Any]) -> dict[Any, list[Spec]]:
    out: dict[Any, list[Spec]] = {}
    for sp in chosen:
        out.setdefault(key(sp), []).append(sp)
    return out


# ----- a real server -----------------------------------------------------------------------


@dataclass
class Api:
    client: httpx.AsyncClient
    sessions: async_sessionmaker[AsyncSession]
    app: Any
    specs: list[Spec]
    viewer: dict[str, str]

    async def get(self, path: str, **params: Any) -> httpx.Response:
        return await self.client.get(path, params=params, headers=self.viewer)


@pytest.fixture
async def api(engine: AsyncEngine) -> AsyncIterator[Api]:
    sessions = make_sessionmaker(engine)
    all_specs = specs()
    await _insert(sessions, all_specs)
    async with sessions() as s, s.begin():
        token = await create_token(s, "wallboard", "viewer")
    app = create_api_app(sessions)
    async with (
        live_server(app, "stats API") as base,
        httpx.AsyncClient(base_url=base, timeout=10) as c,
    ):
        yield Api(c, sessions, app, all_specs, {"Authorization": f"Bearer {token}"})


# ----- response times ---------------------------------------------------------------------


async def test_grouped_percentiles_match_an_independent_computation(api: Api) -> None:
    week = in_week(api.specs)
    r = await api.get(RT, **WEEK)
    assert r.status_code == 200, r.text
    body = r.json()
    assert_figures(body, expected(week))
    # The old flat shape stays for older clients (the up command, dashboards).
    assert body["first_response_seconds"] == body["response_seconds"]
    assert body["groups"] == [] and body["cases"] == 12 and body["breaches"] == 3

    for field_name, key in (
        ("source", lambda sp: sp.source),
        ("priority", lambda sp: sp.priority),
        ("hour_of_week", lambda sp: sp.start.weekday() * 24 + sp.start.hour),
    ):
        body = (await api.get(RT, group_by=field_name, **WEEK)).json()
        want = group(week, key)
        assert [g["key"][field_name] for g in body["groups"]] == sorted(want)
        for g in body["groups"]:
            assert_figures(g, expected(want[g["key"][field_name]]))

    # Two fields, nulls last: the assignee is known for two twitter cases only.
    body = (await api.get(RT, group_by="source,assignee", **WEEK)).json()
    assert [tuple(g["key"].values()) for g in body["groups"]] == [
        ("facebook", None),
        ("twitter", "ann"),
        ("twitter", None),
    ]
    assert body["groups"][1]["cases"] == 2

    # Filters: any value of a comma list, on several fields at once.
    body = (await api.get(RT, source="twitter", brand="acme", priority="P1,P2", **WEEK)).json()
    want = [
        sp
        for sp in week
        if sp.source == "twitter" and sp.brand == "acme" and sp.priority in ("P1", "P2")
    ]
    assert_figures(body, expected(want))
    assert body["filters"] == {"source": ["twitter"], "brand": ["acme"], "priority": ["P1", "P2"]}
    body = (await api.get(RT, complaint="false", group_by="sentiment", **WEEK)).json()
    assert [(g["key"], g["cases"]) for g in body["groups"]] == [({"sentiment": "neutral"}, 1)]
    body = (await api.get(RT, team="care", hour_of_week="9", **WEEK)).json()
    assert body["cases"] == 2

    # Next-response cycles are separate.
    body = (await api.get(RT, kind="next", **WEEK)).json()
    assert_figures(body, expected(in_week(api.specs, "next")))
    assert body["first_response_seconds"] is None

    # PostgreSQL's percentile_cont and the Python path give the same answers.
    query = StatsQuery(since=T, until=T + 7 * D, group_by=("source", "priority", "day"))
    async with api.sessions() as s:
        python = await report(s, query, utcnow(), in_database=False)
        on_postgres = s.get_bind().dialect.name == "postgresql"
        assert _in_sql(s, query, None) is on_postgres  # what the API used above
        if on_postgres:
            sql = await report(s, query, utcnow(), in_database=True)
            _close(sql, python)


def _close(a: Any, b: Any) -> None:
    da, db = a.model_dump(), b.model_dump()
    assert da.keys() == db.keys()
    assert len(da["groups"]) == len(db["groups"])
    for ga, gb in zip([da, *da["groups"]], [db, *db["groups"]], strict=True):
        for name in ga:
            if isinstance(ga[name], dict) and name != "key":
                assert ga[name] == pytest.approx(gb[name], rel=1e-9), name
            elif name not in ("groups",):
                assert ga[name] == gb[name], name


async def test_business_clock_counts_opening_hours_minus_pauses(api: Api) -> None:
    week = in_week(api.specs)
    body = (await api.get(RT, clock="business", group_by="source", **WEEK)).json()
    assert body["clock"] == "business"
    assert_figures(body, expected(week, "business"))
    twitter = next(g for g in body["groups"] if g["key"] == {"source": "twitter"})
    assert_figures(twitter, expected([sp for sp in week if sp.source == "twitter"], "business"))
    # Over the weekend: 1 h of business time each, though 65 h and 47 h passed.
    business = (await api.get(RT, clock="business", priority="P2", source="twitter", **WEEK)).json()
    wall = (await api.get(RT, priority="P2", source="twitter", **WEEK)).json()
    assert business["response_seconds"]["p99"] == pytest.approx(pct([60, 120, 3600, 3600])["p99"])
    assert wall["response_seconds"]["p99"] == pytest.approx(
        pct([60, 120, 65 * 3600, 47 * 3600 + 600])["p99"]
    )
    assert business["breaches"] == wall["breaches"] == 0


async def test_csv_matches_json(api: Api) -> None:
    params = {"group_by": "source,priority", **WEEK}
    body = (await api.get(RT, **params)).json()
    r = await api.get(RT, format="csv", **params)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert len(rows) == len(body["groups"])
    for row, g in zip(rows, body["groups"], strict=True):
        assert (row["source"], row["priority"]) == (g["key"]["source"], g["key"]["priority"])
        assert int(row["cases"]) == g["cases"] and int(row["breaches"]) == g["breaches"]
        for p in ("p50", "p90", "p95", "p99", "mean"):
            got = row[f"response_{p}"]
            want = g["response_seconds"][p]
            assert (float(got) if got else None) == want
            assert float(row[f"ingest_lag_{p}"]) == g["ingest_lag_seconds"][p]
        ratio = row["within_target_ratio"]
        assert (float(ratio) if ratio else None) == g["within_target_ratio"]

    # Accept: text/csv works too; ungrouped is one row of totals.
    r = await api.client.get(RT, params=WEEK, headers={**api.viewer, "Accept": "text/csv"})
    (totals,) = list(csv.DictReader(io.StringIO(r.text)))
    assert int(totals["cases"]) == body["cases"] and int(totals["answered"]) == body["answered"]


BAD: list[tuple[dict[str, str], str]] = [
    ({"group_by": "source,colour"}, "group_by"),
    ({"colour": "red"}, "colour"),
    ({"since": "2026-11-02T10:00:00Z", "until": "2026-11-01T10:00:00Z"}, "since"),
    ({"since": "last tuesday"}, "since"),
    ({"until": "2026-11-01T10:00:00"}, "until"),
    ({"since": "2024-01-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, "since"),
    ({"priority": "P9"}, "priority"),
    ({"kind": "third"}, "kind"),
    ({"clock": "sundial"}, "clock"),
    ({"tz": "Mars/Olympus"}, "tz"),
    ({"format": "xml"}, "format"),
]


async def test_bad_requests_name_the_parameter(api: Api) -> None:
    for params, param in BAD:
        r = await api.get(RT, **params)
        assert r.status_code == 422, (params, r.text)
        assert r.json()["detail"].startswith(f"{param}:"), r.json()
    for path in (RT, TS, BACKLOG):
        assert (await api.client.get(path)).status_code == 401
    r = await api.get(TS, interval="month", **WEEK)
    assert r.status_code == 422 and r.json()["detail"].startswith("interval:")
    r = await api.get(BACKLOG, day="2026-11-02")
    assert r.status_code == 422 and r.json()["detail"].startswith("day:")


# ----- timeseries and backlog -------------------------------------------------------------


async def test_timeseries_buckets(api: Api) -> None:
    week = in_week(api.specs)
    r = await api.get(TS, interval="day", **WEEK)
    assert r.status_code == 200, r.text
    points = days = r.json()["points"]
    assert [datetime.fromisoformat(p["start"]) for p in points] == [T + n * D for n in range(7)]
    by_day = group(week, lambda sp: sp.start.date())
    for p in points:
        chosen = by_day.get(datetime.fromisoformat(p["start"]).date(), [])
        assert_figures(p, expected(chosen))

    # Hours of Monday, in Rome (UTC+1 or +2): 24 points, local starts, empty ones too.
    monday = {"since": (T - 2 * H).isoformat(), "until": (T + 22 * H).isoformat()}
    body = (await api.get(TS, interval="hour", tz="Europe/Rome", **monday)).json()
    points = body["points"]
    starts = [datetime.fromisoformat(p["start"]) for p in points]
    assert starts == sorted(starts) and all(s.minute == 0 for s in starts)
    offset = starts[0].utcoffset()
    assert offset in (timedelta(hours=1), timedelta(hours=2))
    assert len(points) in (24, 25)
    busy = {
        s.astimezone(UTC): p["cases"] for s, p in zip(starts, points, strict=True) if p["cases"]
    }
    # Two twitter cases and one facebook case at 09 UTC; the one before the week at 23 UTC.
    assert busy == {T - H: 1, T + 9 * H: 3}
    week_body = (await api.get(TS, interval="week", **WEEK)).json()
    assert len(week_body["points"]) == 1 and week_body["points"][0]["cases"] == 12
    r = await api.get(TS, interval="day", format="csv", **WEEK)
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [int(row["cases"]) for row in rows] == [p["cases"] for p in days]
    assert [datetime.fromisoformat(row["start"]) for row in rows] == [T + n * D for n in range(7)]


async def test_backlog_by_stage_and_time_left(api: Api) -> None:
    now = utcnow()
    made: dict[str, int] = {}
    async with api.sessions() as s, s.begin():
        for n, (name, age, due_in, flag, paused, warned) in enumerate(
            [
                ("overdue", 30, -5, True, False, True),
                ("warned", 20, 5, False, False, True),
                ("fresh", 10, 120, False, False, False),
                ("paused", 5, 30, False, True, False),
                ("far", 2, 60 * 30, False, False, False),
            ]
        ):
            start = now - timedelta(minutes=age)
            sp = Spec("webhook", "P2", start, None, 3600, brand="now")
            event = f"10000000-0000-0000-0000-{n:012d}"
            s.add(_mention(event, sp))
            case = case_row(f"now-{name}", "webhook", "P2", start, brand="now")
            s.add(case)
            await s.flush()
            cycle = cycle_row(
                case.id,
                1,
                start,
                event,
                "P2",
                paused_at=now if paused else None,
                due_at=now + timedelta(minutes=due_in),
                breached=flag,
            )
            s.add(cycle)
            await s.flush()
            if warned:
                s.add(
                    Deadline(
                        case_id=case.id,
                        cycle_id=cycle.id,
                        stage="warning:0.5",
                        fraction=0.5,
                        due_at=start,
                        status="fired",
                        fired_at=start,
                    )
                )
            made[name] = case.id

    r = await api.get(BACKLOG, brand="now")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["open"] == 5
    assert [c["case_id"] for c in body["cases"]] == [
        made[n] for n in ("overdue", "warned", "fresh", "paused", "far")
    ]
    assert {c["conversation_id"]: (c["stage"], c["time_left"]) for c in body["cases"]} == {
        "now-overdue": ("breached", "overdue"),
        "now-warned": ("warned", "under_15m"),
        "now-fresh": ("not_warned", "1h_to_4h"),
        "now-paused": ("paused", "paused"),
        "now-far": ("not_warned", "over_24h"),
    }
    assert body["by_stage"] == {"not_warned": 2, "warned": 1, "breached": 1, "paused": 1}
    assert body["by_time_left"] == {
        "overdue": 1,
        "under_15m": 1,
        "15m_to_1h": 0,
        "1h_to_4h": 1,
        "4h_to_24h": 0,
        "over_24h": 1,
        "no_target": 0,
        "paused": 1,
    }
    assert body["by_stage_and_time_left"]["not_warned"] == {"1h_to_4h": 1, "over_24h": 1}

    # Unfiltered: the week's two waiting facebook cases too (past due; no target).
    body = (await api.get(BACKLOG, limit=2)).json()
    assert body["open"] == 7 and body["truncated"] and len(body["cases"]) == 2
    assert body["by_stage"]["breached"] == 2 and body["by_time_left"]["no_target"] == 1
    assert body["cases"][0]["source"] == "facebook"  # waiting since last month


# ----- /metrics ---------------------------------------------------------------------------


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def test_metrics_from_the_database_and_who_may_scrape(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The rows were written straight into the tables, around the writers that keep the
    # counters: count them from the rows, as migration 0008 does for existing data.
    async with api.sessions() as s, s.begin():
        await recount(s)
    # From 127.0.0.1, allowed by default: no token needed.
    get_settings.cache_clear()
    r = await api.client.get("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    got = _samples(r.text)
    firsts = [sp for sp in api.specs if sp.kind == "first"]

    def lab(**kw: str) -> tuple[tuple[str, str], ...]:
        return tuple(sorted(kw.items()))

    assert got[("thirdring_cases_open", lab(source="facebook", priority="P1"))] == 1
    assert got[("thirdring_cases_open", lab(source="facebook", priority="P4"))] == 1
    assert got[("thirdring_breaches_total", lab(source="twitter", priority="P1"))] == 1
    assert got[("thirdring_breaches_total", lab(source="facebook", priority="P1"))] == 1
    assert got[("thirdring_breaches_total", lab(source="facebook", priority="P2"))] == 1
    for source in ("twitter", "facebook"):
        answered = [sp.response for sp in firsts if sp.source == source and sp.response is not None]
        name = "thirdring_first_response_seconds"
        assert got[(f"{name}_count", lab(source=source))] == len(answered)
        assert got[(f"{name}_sum", lab(source=source))] == pytest.approx(sum(answered))
        within_minute = sum(v <= 60 for v in answered)
        assert got[(f"{name}_bucket", lab(source=source, le="60.0"))] == within_minute
        lags = [sp.lag for sp in api.specs if sp.source == source]
        assert got[("thirdring_mentions_total", lab(source=source))] == len(lags)
        assert got[("thirdring_ingest_lag_seconds_count", lab(source=source))] == len(lags)
        assert got[("thirdring_ingest_lag_seconds_sum", lab(source=source))] == pytest.approx(
            sum(lags)
        )
        assert got[("thirdring_ingest_lag_seconds_bucket", lab(source=source, le="1.0"))] == sum(
            lag <= 1 for lag in lags
        )

    # Outside the allowed networks: a viewer token, or nothing.
    monkeypatch.setenv("THIRDRING_METRICS_ALLOW", "10.0.0.0/8, 192.168.0.0/16")
    get_settings.cache_clear()
    try:
        refused = await api.client.get("/metrics")
        assert refused.status_code == 401
        assert (await api.client.get("/metrics", headers=api.viewer)).status_code == 200
        api.app.state.metrics_allow = "127.0.0.0/8"  # the app's own setting wins
        assert (await api.client.get("/metrics")).status_code == 200
    finally:
        monkeypatch.delenv("THIRDRING_METRICS_ALLOW")
        get_settings.cache_clear()


def test_openapi_documents_the_stats() -> None:
    spec = create_api_app(None).openapi()  # type: ignore[arg-type]
    rt = spec["paths"][RT]["get"]
    names = {p["name"] for p in rt["parameters"]}
    assert {
        "since",
        "until",
        "group_by",
        "kind",
        "clock",
        "format",
        "source",
        "hour_of_week",
    } <= names
    group_by = next(p for p in rt["parameters"] if p["name"] == "group_by")
    assert "heatmap" in group_by["examples"]
    assert "text/csv; charset=utf-8" in rt["responses"]["200"]["content"]
    report_schema = spec["components"]["schemas"]["ResponseTimesReport"]
    assert report_schema["examples"][0]["groups"][0]["key"] == {"source": "twitter"}
    assert {TS, BACKLOG, "/metrics"} <= set(spec["paths"])
