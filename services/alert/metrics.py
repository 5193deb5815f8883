"""Prometheus metrics of the alert service, read from the database at scrape time.

Every number comes from the database, not from in-process counters, so all replicas of the
alert service report the same values (scrape any one; sum nothing). A scrape reads a few
small things, never whole tables: the open cases (``ix_cases_open``, partial), the counters
that writers keep as events happen (``stats_counters``, services/alert/stats/counters.py),
and the cycles waiting past their deadline whose breach has not fired yet
(``ix_response_cycles_unfired``, partial; normally none). A custom collector on a registry
of its own (never the process-global one) renders the snapshot:

| metric | type | labels |
|---|---|---|
| ``thirdring_cases_open`` | gauge | source, priority |
| ``thirdring_breaches_total`` | counter | source, priority (of the cycle when it breached) |
| ``thirdring_first_response_seconds`` | histogram (wall clock) | source |
| ``thirdring_mentions_total`` | counter | source |
| ``thirdring_ingest_lag_seconds`` | histogram (ingested_at - created_at) | source |

Histograms are cumulative over the whole history, so ``rate()`` over them gives the recent
distribution, e.g. ``histogram_quantile(0.9, rate(thirdring_ingest_lag_seconds_bucket[5m]))``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.alert.stats import counters
from services.alert.stats.counters import INF, le_label
from shared.db.models import Case, ResponseCycle

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass
class Histogram:
    """Cumulative counts per upper bound (the last one is +Inf) and the sum."""

    buckets: list[tuple[str, int]]
    total: float


@dataclass
class Snapshot:
    cases_open: dict[tuple[str, str], int] = field(default_factory=dict)
    breaches: dict[tuple[str, str], int] = field(default_factory=dict)
    first_response: dict[str, Histogram] = field(default_factory=dict)
    mentions: dict[str, int] = field(default_factory=dict)
    ingest_lag: dict[str, Histogram] = field(default_factory=dict)


def _histogram(counts: dict[str, int], total: float, bounds: Sequence[float]) -> Histogram:
    """Cumulative buckets from the counts per bucket (keyed by their ``le`` label)."""

    def upper(le: str) -> float:
        return math.inf if le == INF else float(le)

    cumulative = [
        (le_label(b), sum(n for le, n in counts.items() if upper(le) <= b)) for b in bounds
    ]
    return Histogram([*cumulative, (INF, sum(counts.values()))], total)


async def snapshot(session: AsyncSession, now: datetime) -> Snapshot:
    snap = Snapshot()
    rows = await session.execute(
        select(Case.source, Case.priority, func.count())
        .where(Case.status == "open")
        .group_by(Case.source, Case.priority)
    )
    snap.cases_open = {(s, p): n for s, p, n in rows.all()}

    rc = ResponseCycle
    rows = await session.execute(
        select(rc.source, rc.priority, func.count())
        .where(counters.overdue_unfired(now))
        .group_by(rc.source, rc.priority)
    )
    breaches: dict[tuple[str, str], int] = {(s or "", p): n for s, p, n in rows.all()}

    by_bucket: dict[tuple[str, str], dict[str, int]] = defaultdict(dict)
    totals: dict[tuple[str, str], float] = defaultdict(float)
    for row in await counters.read(session):
        if row.metric == "breach":
            key = (row.source, row.priority)
            breaches[key] = breaches.get(key, 0) + row.events
        else:
            by_bucket[(row.metric, row.source)][row.le] = row.events
            totals[(row.metric, row.source)] += row.total
    snap.breaches = breaches
    for (metric, source), counts in by_bucket.items():
        if metric == "first_response":
            hist = _histogram(counts, totals[(metric, source)], counters.RESPONSE_BUCKETS)
            snap.first_response[source] = hist
        elif metric == "mention":
            snap.mentions[source] = sum(counts.values())
            snap.ingest_lag[source] = _histogram(
                counts, totals[(metric, source)], counters.LAG_BUCKETS
            )
    return snap


class DatabaseCollector(Collector):
    """Yields the metric families of one snapshot (one collector per scrape)."""

    def __init__(self, snap: Snapshot) -> None:
        self.snap = snap

    def collect(self) -> Iterator[Metric]:
        snap = self.snap
        g = GaugeMetricFamily(
            "thirdring_cases_open", "Open cases now", labels=["source", "priority"]
        )
        for (source, priority), n in sorted(snap.cases_open.items()):
            g.add_metric([source, priority], n)
        yield g

        c = CounterMetricFamily(
            "thirdring_breaches",
            "Response cycles that breached their target (fired, answered late, or waiting "
            "past the deadline)",
            labels=["source", "priority"],
        )
        for (source, priority), n in sorted(snap.breaches.items()):
            c.add_metric([source, priority], n)
        yield c

        h = HistogramMetricFamily(
            "thirdring_first_response_seconds",
            "Time to first response (wall clock) of answered cases",
            labels=["source"],
        )
        for source, hist in sorted(snap.first_response.items()):
            h.add_metric([source], hist.buckets, hist.total)
        yield h

        m = CounterMetricFamily(
            "thirdring_mentions", "Mentions stored by the alert service", labels=["source"]
        )
        for source, n in sorted(snap.mentions.items()):
            m.add_metric([source], n)
        yield m

        lag = HistogramMetricFamily(
            "thirdring_ingest_lag_seconds",
            "Ingest lag of stored mentions: ingested_at - created_at",
            labels=["source"],
        )
        for source, hist in sorted(snap.ingest_lag.items()):
            lag.add_metric([source], hist.buckets, hist.total)
        yield lag


def render(snap: Snapshot) -> bytes:
    """The Prometheus text exposition of ``snap``, from a registry of its own."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector(snap))
    return generate_latest(registry)
