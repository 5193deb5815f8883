"""Stats query latency over many cases on PostgreSQL (`bench/stats`).

Generates N cases spread over 60 days directly in SQL (cases, the opening mentions, the
first-response cycles, wall-clock policies: the business-clock time equals the wall time;
then /metrics' counters are recounted from them), then times the
manager queries over the last 30 days, a /metrics scrape and a whole dashboard load (its six
requests at once) through the same service functions the API uses.

    .venv/bin/python -m bench.stats --cases 1000000
    .venv/bin/python -m bench.stats --cases 1000000 --reuse   # time again, same rows

Writes bench/results/stats-<N>.json and prints p50/p95 per query.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

from rich.console import Console
from rich.table import Table
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.alert import metrics
from services.alert.stats.backlog import backlog
from services.alert.stats.counters import recount
from services.alert.stats.query import StatsQuery
from services.alert.stats.service import report, timeseries
from shared.db.engine import make_engine, make_sessionmaker
from shared.db.migrate import upgrade
from shared.events import utcnow
from shared.progress import progress_bar

DB = "thirdring_bench_stats"
URL = f"postgresql+asyncpg://thirdring:thirdring@127.0.0.1:5432/{DB}"
console = Console()

# Rows made in SQL: a case per conversation, the post that opened it, and its first cycle
# (with the stats columns the application copies onto a cycle when it inserts one).
FILL = [
    """
    INSERT INTO cases (id, conversation_id, brand, source, status, priority, opened_at,
                       answered_at, cycles, created_at, updated_at, language, vip,
                       waiting_on_customer)
    SELECT g, 'bench:' || g, (ARRAY['acme','zeta','nova'])[1 + g % 3],
           (ARRAY['twitter','mastodon','reddit','bluesky','rss'])[1 + g % 5],
           CASE WHEN g % 10 = 0 THEN 'open' ELSE 'answered' END,
           'P' || (1 + g % 4),
           CAST(:t0 AS timestamptz) + (g * CAST(:step AS float8)) * interval '1 second',
           CASE WHEN g % 10 = 0 THEN NULL
                ELSE CAST(:t0 AS timestamptz)
                     + (g * CAST(:step AS float8) + 60 + (g * 7919) % 7200)
                     * interval '1 second' END,
           1, now(), now(), (ARRAY['en','it','et','es','de'])[1 + g % 5], g % 50 = 0, false
    FROM generate_series(CAST(:lo AS bigint), CAST(:hi AS bigint)) g
    """,
    """
    INSERT INTO mentions (event_id, source, external_id, conversation_id, brand, author_id,
                          author_vip, is_brand, text, created_at, ingested_at, stored_at,
                          lang, sentiment, negative_score, complaint_score, urgency_score,
                          priority, reasons, model_version)
    SELECT 'e' || c.id, c.source, c.id::text, c.conversation_id, c.brand, 'u' || (c.id % 99991),
           c.vip, false, 'my order never arrived', c.opened_at,
           c.opened_at + ((c.id * 31) % 120) * interval '1 second', now(), c.language,
           (ARRAY['negative','neutral','positive'])[1 + c.id % 3], 0.5, (c.id % 100) / 100.0,
           0.5, c.priority, '{"reasons": []}', 'bench'
    FROM cases c WHERE c.id BETWEEN CAST(:lo AS bigint) AND CAST(:hi AS bigint)
    """,
    """
    INSERT INTO response_cycles (id, case_id, seq, kind, started_at, started_event_id,
                                 priority, target_seconds, business_time, paused_seconds,
                                 due_at, answered_at, response_seconds,
                                 business_response_seconds, breached,
                                 source, brand, language, sentiment, complaint_score,
                                 ingest_lag_seconds)
    SELECT c.id, c.id, 1, 'first', c.opened_at, m.event_id, c.priority,
           CASE c.priority WHEN 'P1' THEN 900 WHEN 'P2' THEN 3600 WHEN 'P3' THEN 14400 END,
           false, 0,
           c.opened_at + CASE c.priority WHEN 'P1' THEN interval '900 s'
                WHEN 'P2' THEN interval '3600 s' WHEN 'P3' THEN interval '14400 s' END,
           c.answered_at, extract(epoch FROM c.answered_at - c.opened_at),
           extract(epoch FROM c.answered_at - c.opened_at),
           coalesce(c.answered_at > c.opened_at + CASE c.priority WHEN 'P1' THEN interval '900 s'
                WHEN 'P2' THEN interval '3600 s' ELSE interval '14400 s' END, false),
           c.source, c.brand, c.language, m.sentiment, m.complaint_score,
           extract(epoch FROM m.ingested_at - m.created_at)
    FROM cases c JOIN mentions m ON m.event_id = 'e' || c.id
    WHERE c.id BETWEEN CAST(:lo AS bigint) AND CAST(:hi AS bigint)
    """,
]


def recreate_database() -> None:
    psql = ["su", "postgres", "-c"]
    subprocess.run([*psql, f"psql -qc 'DROP DATABASE IF EXISTS {DB} WITH (FORCE)'"], check=True)
    subprocess.run([*psql, f"psql -qc 'CREATE DATABASE {DB} OWNER thirdring'"], check=True)
    upgrade(URL)


async def fill(n: int, chunk: int = 250_000) -> float:
    engine = make_engine(URL)
    t0 = utcnow() - timedelta(days=60)
    step = 60 * 86400 / n  # spread evenly over 60 days
    start = time.perf_counter()
    with progress_bar() as bar:
        task = bar.add_task(f"generate {n:,} cases", total=n)
        for lo in range(1, n + 1, chunk):
            hi = min(n, lo + chunk - 1)
            async with engine.begin() as conn:
                for sql in FILL:
                    await conn.execute(text(sql), {"t0": t0, "step": step, "lo": lo, "hi": hi})
            bar.update(task, completed=hi)
    async with engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.exec_driver_sql(f"SELECT setval('cases_id_seq', {n})")
    await engine.dispose()
    await count_events()
    await vacuum()
    return time.perf_counter() - start


async def scrape(session: AsyncSession, now: datetime) -> bytes:
    return metrics.render(await metrics.snapshot(session, now))


async def count_events() -> None:
    """The rows were made around the writers that keep /metrics' counters: count them."""
    engine = make_engine(URL)
    async with make_sessionmaker(engine)() as session, session.begin():
        await recount(session)
    await engine.dispose()


async def vacuum() -> None:
    """What autovacuum does to tables after inserts and migrations: statistics, and the
    visibility map that index-only scans need."""
    engine = make_engine(URL)
    async with engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.exec_driver_sql("VACUUM ANALYZE")
    await engine.dispose()


async def dashboard_load(
    sessions: async_sessionmaker[AsyncSession], query: StatsQuery, now: datetime
) -> None:
    """The six requests a dashboard load fires at once (dashboard.js ``load()``) for ``query``.

    Each gets its own session, as each request gets its own in the API, so PostgreSQL runs
    them side by side as it would for a browser's ``Promise.all``.
    """

    async def one(fn: Callable[[AsyncSession], Awaitable[object]]) -> None:
        async with sessions() as session:
            await fn(session)

    def by(field: str) -> Callable[[AsyncSession], Awaitable[object]]:
        return lambda s: report(s, replace(query, group_by=(field,)), now)

    await asyncio.gather(
        one(lambda s: timeseries(s, query, "day", now)),
        one(by("team")),
        one(by("source")),
        one(by("hour_of_week")),
        one(by("brand")),
        one(lambda s: backlog(s, now, {}, limit=200)),
    )


async def measure(repeat: int, only: str | None = None) -> dict[str, dict[str, float]]:
    engine = make_engine(URL)
    sessions = make_sessionmaker(engine)
    now = utcnow()
    last30 = StatsQuery(since=now - timedelta(days=30), until=now)
    business = StatsQuery(since=last30.since, until=now, clock="business")
    queries = {
        "response-times, 30 days": lambda s: report(s, last30, now),
        "… group_by=source": lambda s: report(
            s, StatsQuery(since=last30.since, until=now, group_by=("source",)), now
        ),
        "… group_by=team,priority": lambda s: report(
            s, StatsQuery(since=last30.since, until=now, group_by=("team", "priority")), now
        ),
        "… group_by=hour_of_week": lambda s: report(
            s, StatsQuery(since=last30.since, until=now, group_by=("hour_of_week",)), now
        ),
        "… filter brand=acme, P1": lambda s: report(
            s,
            StatsQuery(
                since=last30.since, until=now, filters={"brand": ("acme",), "priority": ("P1",)}
            ),
            now,
        ),
        "… clock=business": lambda s: report(s, business, now),
        "… clock=business, group_by=source": lambda s: report(
            s,
            StatsQuery(since=last30.since, until=now, clock="business", group_by=("source",)),
            now,
        ),
        "timeseries, daily": lambda s: timeseries(s, last30, "day", now),
        "backlog (100 oldest)": lambda s: backlog(s, now, {}),
        "/metrics scrape": lambda s: scrape(s, now),
        # Times the six requests together; the session it is handed goes unused.
        "dashboard load (6 requests at once)": lambda _s: dashboard_load(sessions, last30, now),
    }
    results: dict[str, dict[str, float]] = {}
    for name, fn in queries.items():
        if only and only not in name:
            continue
        times = []
        for _ in range(repeat):
            async with sessions() as session:
                start = time.perf_counter()
                await fn(session)
                times.append(time.perf_counter() - start)
        times.sort()
        results[name] = {
            "p50_ms": statistics.median(times) * 1000,
            "p95_ms": times[min(len(times) - 1, round(0.95 * (len(times) - 1)))] * 1000,
        }
    await engine.dispose()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cases", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="time the database generated before again (migrated to head first)",
    )
    parser.add_argument("--only", help="time only the queries whose name contains this")
    args = parser.parse_args()
    fill_seconds = None
    if args.reuse:
        upgrade(URL)  # the generated rows stay; new migrations (indexes) apply to them
        asyncio.run(vacuum())
    else:
        recreate_database()
        fill_seconds = asyncio.run(fill(args.cases))
    results = asyncio.run(measure(args.repeat, args.only))
    table = Table(title=f"stats queries over the last 30 days, {args.cases:,} cases (PostgreSQL)")
    table.add_column("query")
    table.add_column("p50 ms", justify="right")
    table.add_column("p95 ms", justify="right")
    for name, r in results.items():
        table.add_row(name, f"{r['p50_ms']:.0f}", f"{r['p95_ms']:.0f}")
    console.print(table)
    if args.only:
        return  # a partial run does not replace the results file
    out = Path(f"bench/results/stats-{args.cases}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    if fill_seconds is None and out.exists():  # --reuse: the rows are the ones timed before
        fill_seconds = json.loads(out.read_text()).get("fill_seconds")
    payload = {"cases": args.cases, "fill_seconds": fill_seconds, "queries": results}
    payload["cpu_count"] = os.cpu_count()
    out.write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
