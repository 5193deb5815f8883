"""The managers' dashboard in a real browser, and the stats/cases API under schemathesis.

Known cases and cycles (some answered in time, some late, some still waiting) are written
straight into SQLite; the real API runs on 127.0.0.1. Chromium (Debian's, driven by
Playwright) opens ``/dashboard``, signs in with a viewer token and the test counts what was
drawn: the Chart.js instances on each canvas and their points, the 168 heat-map cells, the
backlog rows; a channel filter must change them; a wrong token must show the message.
A screenshot lands in ``test-artifacts/dashboard.png``.

The schema test generates requests for every stats and cases GET operation from the app's
OpenAPI document (schemathesis + hypothesis, bounded and derandomized) and asserts that
none of them gets a 5xx.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from services.alert.access import create_token
from services.alert.api.app import create_api_app
from shared.db.engine import make_sessionmaker
from shared.db.models import Case, ResponseCycle, Team
from shared.events import utcnow
from tests.live_server import live_server

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
RT = "/api/v1/stats/response-times"

H = timedelta(hours=1)
D = timedelta(days=1)
MIN = timedelta(minutes=1)


@dataclass
class Spec:
    source: str
    team: str | None
    brand: str
    priority: str
    start: datetime
    response: float | None  # seconds to the answer; None = still waiting
    target: float | None
    breached_flag: bool = False


def specs(now: datetime) -> list[Spec]:
    """Six answered cycles in the last days (two late), four waiting now (one overdue)."""
    today = datetime(now.year, now.month, now.day, tzinfo=UTC)
    return [
        Spec("twitter", "care", "acme", "P1", today - D + 9 * H, 120, 900),
        Spec("twitter", "care", "acme", "P1", today - D + 10 * H, 1200, 900),  # late
        Spec("twitter", "billing", "acme", "P2", today - 2 * D + 14 * H, 600, 3600),
        Spec("facebook", "care", "zeta", "P2", today - 2 * D + 15 * H, 5000, 3600),  # late
        Spec("facebook", "billing", "zeta", "P1", today - 3 * D + 9 * H, 300, 900),
        Spec("facebook", None, "acme", "P3", today - 4 * D + 11 * H, 7200, 14400),
        # waiting now
        Spec("twitter", "care", "acme", "P1", now - 10 * MIN, None, 900),
        Spec("facebook", "billing", "zeta", "P1", now - 2 * H, None, 900, breached_flag=True),
        Spec("twitter", None, "acme", "P2", now - 30 * MIN, None, 3600),
        Spec("facebook", "care", "acme", "P4", now - 3 * H, None, None),
    ]


async def _insert(sessions: async_sessionmaker[AsyncSession], all_specs: list[Spec]) -> None:
    now = utcnow()
    async with sessions() as s, s.begin():
        teams: dict[str, Team] = {}
        for name in ("care", "billing"):
            teams[name] = Team(
                name=name,
                calendar=None,
                capacity=None,
                reassign_after_seconds=None,
                channels={},
                active=True,
                updated_at=now,
            )
            s.add(teams[name])
        await s.flush()
        for n, sp in enumerate(all_specs):
            answered = None if sp.response is None else sp.start + timedelta(seconds=sp.response)
            case = Case(
                conversation_id=f"{sp.source}:conv-{n}",
                brand=sp.brand,
                source=sp.source,
                status="open" if answered is None else "answered",
                priority=sp.priority,
                opened_at=sp.start,
                answered_at=answered,
                reply_url=None,
                cycles=1,
                created_at=sp.start,
                updated_at=sp.start,
                language="en",
                team_id=teams[sp.team].id if sp.team else None,
            )
            s.add(case)
            await s.flush()
            s.add(
                ResponseCycle(
                    case_id=case.id,
                    seq=1,
                    started_at=sp.start,
                    started_event_id=f"00000000-0000-0000-0000-{n:012d}",
                    kind="first",
                    priority=sp.priority,
                    target_seconds=sp.target,
                    business_time=False,
                    paused_seconds=0.0,
                    paused_at=None,
                    due_at=None if sp.target is None else sp.start + timedelta(seconds=sp.target),
                    answered_at=answered,
                    answered_event_id=None,
                    response_seconds=sp.response,
                    breached=sp.breached_flag,
                )
            )


@dataclass
class Live:
    base: str
    token: str
    specs: list[Spec]
    client: httpx.AsyncClient

    @property
    def viewer(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture
async def live(engine: AsyncEngine) -> AsyncIterator[Live]:
    sessions = make_sessionmaker(engine)
    all_specs = specs(utcnow())
    await _insert(sessions, all_specs)
    async with sessions() as s, s.begin():
        token = await create_token(s, "wallboard", "viewer")
    async with (
        live_server(create_api_app(sessions), "dashboard API") as base,
        httpx.AsyncClient(base_url=base, timeout=10) as client,
    ):
        yield Live(base, token, all_specs, client)


def _need_chromium() -> None:
    if CHROMIUM.exists():
        return
    message = "no /usr/bin/chromium: run scripts/browser-up.sh (apt-get install chromium)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


# ----- the page and its files, without a browser ---------------------------------------


async def test_page_and_static_files_need_no_token_and_stay_inside() -> None:
    app = create_api_app(None)  # type: ignore[arg-type]  (no route here touches the database)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        page = await c.get("/dashboard")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "chart.umd.min.js" in page.text
        for name, kind in [
            ("dashboard.js", "text/javascript"),
            ("dashboard.css", "text/css"),
            ("vendor/chart.umd.min.js", "text/javascript"),
            ("vendor/LICENSE.md", "text/plain"),
        ]:
            r = await c.get(f"/dashboard/static/{name}")
            assert r.status_code == 200, name
            assert r.headers["content-type"].startswith(kind), name
        assert (await c.get("/dashboard/static/vendor/chart.umd.min.js")).text.startswith(
            "/*!\n * Chart.js v4."
        )
        for bad in ["..%2F__init__.py", "%2E%2E/%2E%2E/api/app.py", "vendor", "nope.js"]:
            assert (await c.get(f"/dashboard/static/{bad}")).status_code == 404, bad
        assert (await c.get("/dashboard/")).headers["location"] == "/dashboard"
        # Not an API operation: kept out of the OpenAPI document.
        paths = (await c.get("/openapi.json")).json()["paths"]
        assert not [p for p in paths if p.startswith("/dashboard")]


# ----- the browser ----------------------------------------------------------------------

_CHARTS_JS = """() => Object.fromEntries(
  ['c-attainment', 'c-percentiles', 'c-team', 'c-source'].map((id) => {
    const canvas = document.getElementById(id);
    const chart = window.Chart.getChart(canvas);
    return [id, {
      width: canvas.width, height: canvas.height,
      type: chart ? chart.config.type : null,
      labels: chart ? chart.data.labels : null,
      datasets: chart ? chart.data.datasets.map((d) => ({label: d.label, data: d.data})) : [],
      drawn: chart ? chart.getSortedVisibleDatasetMetas().map((m) => m.data
        .filter((el) => !el.skip && Number.isFinite(el.x) && Number.isFinite(el.y)).length)
        : [],
    }];
  }))"""

_HEAT_JS = """() => {
  const cells = [...document.querySelectorAll('#heatmap .cell')];
  return {
    cells: cells.length,
    hows: cells.map((c) => +c.dataset.how),
    colored: cells.filter((c) => !c.classList.contains('empty'))
      .map((c) => [+c.dataset.how, +c.dataset.p50]),
  };
}"""

_ROWS_JS = """() => [...document.querySelectorAll('#backlog tbody tr')].map((tr) =>
  [...tr.cells].map((td) => td.textContent))"""


async def _loaded(page: Any, loads: int) -> None:
    await page.wait_for_function(
        f"document.body.dataset.state === 'ready' && document.body.dataset.loads === '{loads}'",
        timeout=15000,
    )


def _by_key(report: dict[str, Any], field: str, value: str) -> dict[Any, dict[str, Any]]:
    return {g["key"][field]: g[value] for g in report["groups"]}


@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_dashboard_draws_the_figures_in_a_browser(live: Live) -> None:
    _need_chromium()
    from playwright.async_api import async_playwright

    today = utcnow().date()
    rng = {
        "since": datetime(today.year, today.month, today.day, tzinfo=UTC) - 6 * D,
        "until": datetime(today.year, today.month, today.day, tzinfo=UTC) + D,
    }
    params = {k: v.isoformat() for k, v in rng.items()} | {"tz": "UTC"}

    async def api(path: str, **extra: str) -> dict[str, Any]:
        r = await live.client.get(path, params=params | extra, headers=live.viewer)
        assert r.status_code == 200, r.text
        return r.json()

    by_team = await api(RT, group_by="team")
    by_source = await api(RT, group_by="source")
    by_hour = await api(RT, group_by="hour_of_week")
    # The figures the test data was built for (decided by hand).
    assert _by_key(by_team, "team", "breaches") == {"care": 2, "billing": 1, None: 0}
    assert _by_key(by_source, "source", "breaches") == {"twitter": 1, "facebook": 2}
    answered_hours = {g["key"]["hour_of_week"] for g in by_hour["groups"] if g["answered"]}
    assert len(answered_hours) == 6

    ARTIFACTS.mkdir(exist_ok=True)
    started = time.monotonic()
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            context = await browser.new_context(
                viewport={"width": 1366, "height": 768}, timezone_id="UTC", locale="en-GB"
            )
            page = await context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await page.goto(f"{live.base}/dashboard")
            # No token yet: a prompt, no data calls.
            await page.wait_for_function("document.body.dataset.state === 'idle'")
            assert "Enter a viewer token" in await page.inner_text("#message")

            await page.fill("#f-since", (today - timedelta(days=6)).isoformat())
            await page.fill("#f-until", today.isoformat())
            await page.fill("#token", live.token)
            await page.click("#sign-in")
            await _loaded(page, 1)
            assert await page.is_hidden("#message")
            assert await page.evaluate("sessionStorage.getItem('thirdring.token')") == live.token

            charts = await page.evaluate(_CHARTS_JS)
            for id_, c in charts.items():
                assert c["width"] > 0 and c["height"] > 0, id_
                assert c["type"] is not None, f"{id_}: no Chart.js instance"
            # Line charts: one point per day of the range (7), drawn at real coordinates.
            att = charts["c-attainment"]
            assert [len(d["data"]) for d in att["datasets"]] == [7]
            days_with_decisions = sum(v is not None for v in att["datasets"][0]["data"])
            assert att["drawn"] == [days_with_decisions] and days_with_decisions >= 4
            pct = charts["c-percentiles"]
            assert [d["label"] for d in pct["datasets"]] == ["p50", "p90"]
            assert [len(d["data"]) for d in pct["datasets"]] == [7, 7]
            assert sum(v is not None for v in pct["datasets"][0]["data"]) == 4  # answered days
            # Bars: one per team / channel, breaches as the API counts them.
            team = charts["c-team"]
            assert team["type"] == "bar"
            assert dict(zip(team["labels"], team["datasets"][0]["data"], strict=True)) == {
                "care": 2,
                "billing": 1,
                "(no team)": 0,
            }
            assert team["drawn"] == [3, 3]
            source = charts["c-source"]
            assert dict(zip(source["labels"], source["datasets"][0]["data"], strict=True)) == {
                "twitter": 1,
                "facebook": 2,
            }

            heat = await page.evaluate(_HEAT_JS)
            assert heat["cells"] == 168
            assert sorted(heat["hows"]) == list(range(168))
            assert {how for how, _ in heat["colored"]} == answered_hours
            p50s = {
                g["key"]["hour_of_week"]: g["response_seconds"]["p50"] for g in by_hour["groups"]
            }
            assert all(p50 == pytest.approx(p50s[how]) for how, p50 in heat["colored"])

            rows = await page.evaluate(_ROWS_JS)
            assert len(rows) == 4  # the four waiting cases
            assert sorted(r[1] for r in rows) == sorted(
                f"{sp.source}:conv-{n}" for n, sp in enumerate(live.specs) if sp.response is None
            )
            # At risk first: the overdue one, then 5 min left, 30 min left, no target.
            assert [r[1] for r in rows] == [
                "facebook:conv-7",
                "twitter:conv-6",
                "twitter:conv-8",
                "facebook:conv-9",
            ]
            assert rows[0][9].startswith("overdue") and rows[0][7] == "breached"
            assert rows[3][9] == "no target"
            assert await page.inner_text("#t-open") == "4"

            await page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)

            # A channel filter re-queries: only twitter is left everywhere.
            await page.fill("#f-source", "twitter")
            await page.click("#apply")
            await _loaded(page, 2)
            rows = await page.evaluate(_ROWS_JS)
            assert [r[1] for r in rows] == ["twitter:conv-6", "twitter:conv-8"]
            charts = await page.evaluate(_CHARTS_JS)
            assert charts["c-source"]["labels"] == ["twitter"]
            assert dict(
                zip(
                    charts["c-team"]["labels"], charts["c-team"]["datasets"][0]["data"], strict=True
                )
            ) == {"care": 1, "(no team)": 0, "billing": 0}
            heat = await page.evaluate(_HEAT_JS)
            assert len(heat["colored"]) == 3  # twitter's answered hours only
            assert await page.inner_text("#t-open") == "2"
            assert "source=twitter" in page.url
            assert errors == []

            # A wrong token: a clear message, nothing kept.
            wrong = await context.new_page()
            await wrong.goto(f"{live.base}/dashboard")
            await wrong.wait_for_function("document.body.dataset.state === 'idle'")
            await wrong.fill("#token", "tr_not-a-token")
            await wrong.click("#sign-in")
            await wrong.wait_for_function("document.body.dataset.state === 'error'")
            message = await wrong.inner_text("#message")
            assert "Sign-in failed" in message and "invalid or revoked API token" in message
            assert await wrong.is_visible("#message")
            assert await wrong.evaluate("sessionStorage.getItem('thirdring.token')") is None
        finally:
            await browser.close()
    assert time.monotonic() - started < 60


# ----- schemathesis over the stats and cases GET operations ----------------------------


def _fuzz(
    base: str, headers: dict[str, str], max_examples: int
) -> tuple[Counter[tuple[str, int]], list[str]]:
    """Every stats and cases GET operation, positive and negative data: the statuses seen
    per operation, and the requests that got a 5xx (as curl commands)."""
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from schemathesis import GenerationMode

    schema = schemathesis.openapi.from_url(f"{base}/openapi.json").include(
        method="GET", path_regex=r"^/api/v1/(stats|cases)(/|$)"
    )
    seen: Counter[tuple[str, int]] = Counter()
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=max_examples,
                derandomize=True,
                database=None,
                deadline=None,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            def run(case: Any) -> None:
                response = case.call(base_url=base, headers=headers, timeout=10)
                seen[(case.operation.label, response.status_code)] += 1
                if response.status_code >= 500:
                    label = case.operation.label
                    curl = case.as_curl_command()
                    failures.append(f"{label} -> {response.status_code}: {curl}")

            run()
    return seen, failures


@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_stats_and_cases_api_never_answer_5xx(live: Live) -> None:
    started = time.monotonic()
    seen, failures = await asyncio.to_thread(_fuzz, live.base, live.viewer, 30)
    assert failures == [], "\n".join(failures[:20])
    answered = {label for label, status in seen if status < 500}
    assert answered >= {
        "GET /api/v1/stats/response-times",
        "GET /api/v1/stats/timeseries",
        "GET /api/v1/stats/backlog",
        "GET /api/v1/cases",
        "GET /api/v1/cases/{case_id}",
    }
    # The token works: every operation answered some requests with data, not only 401/422.
    ok = {label for label, status in seen if status == 200}
    assert ok >= answered - {"GET /api/v1/cases/{case_id}"}, sorted(seen.items())
    assert sum(seen.values()) >= 5 * 30
    # Found by this test: an id beyond BIGINT overflowed the driver (500); now a 422.
    huge = await live.client.get("/api/v1/cases/16468032660946065845685059584", headers=live.viewer)
    assert huge.status_code == 422, huge.text
    assert (await live.client.get("/api/v1/cases/1", headers=live.viewer)).status_code == 200
    assert time.monotonic() - started < 60
