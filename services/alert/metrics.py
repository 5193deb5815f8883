"""Prometheus metrics of the alert service, computed from the database at scrape time.

Every number comes from the tables, not from in-process counters, so all replicas of the
alert service report the same values (scrape any one; sum nothing). Each scrape reads a
snapshot with a few aggregate queries, then a custom collector on a registry of its own
(never the process-global one) renders it:

| metric | type | labels |
|---|---|---|
| ``thirdring_cases_open`` | gauge | source, priority |
| ``thirdring_breaches_total`` | counter | source, priority (of the cycle) |
| ``thirdring_first_response_seconds`` | histogram (wall clock) | source |
| ``thirdring_mentions_total`` | counter | source |
| ``thirdring_ingest_lag_seconds`` | histogram (ingested_at - created_at) | source |

Histograms are cumulative over the whole history, so ``rate()`` over them gives the recent
distribution, e.g. ``histogram_quantile(0.9, rate(thirdring_ingest_lag_seconds_bucket[5m]))``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from sqlalchemy import ColumnElement, Float, case, cast, extract, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.alert.stats.service import breach_clause
from shared.db.models import Case, Mention, ResponseCycle

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

RESPONSE_BUCKETS = (30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 28800, 86400)
LAG_BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)


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


def _bound(value: float) -> str:
    return "+Inf" if math.isinf(value) else repr(float(value))


def _histogram_columns(
    value: ColumnElement[Any], bounds: Sequence[float]
) -> list[ColumnElement[Any]]:
    cols = [func.sum(case((value <= b, 1), else_=0)) for b in bounds]
    return [*cols, func.count(value), func.coalesce(func.sum(value), 0.0)]


def _histogram(row: Sequence[Any], bounds: Sequence[float]) -> Histogram:
    counts = [int(c or 0) for c in row[: len(bounds)]]
    count, total = int(row[len(bounds)] or 0), float(row[len(bounds) + 1] or 0.0)
    labels = [_bound(b) for b in bounds]
    return Histogram([*zip(labels, counts, strict=True), ("+Inf", count)], total)


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
        select(Case.source, rc.priority, func.count())
        .select_from(rc)
        .join(Case, Case.id == rc.case_id)
        .where(breach_clause(now))
        .group_by(Case.source, rc.priority)
    )
    snap.breaches = {(s, p): n for s, p, n in rows.all()}

    rows = await session.execute(
        select(Case.source, *_histogram_columns(rc.response_seconds, RESPONSE_BUCKETS))
        .select_from(rc)
        .join(Case, Case.id == rc.case_id)
        .where(rc.kind == "first", rc.response_seconds.is_not(None))
        .group_by(Case.source)
    )
    snap.first_response = {r[0]: _histogram(r[1:], RESPONSE_BUCKETS) for r in rows.all()}

    lag = _lag_seconds(session)
    rows = await session.execute(
        select(Mention.source, func.count(), *_histogram_columns(lag, LAG_BUCKETS)).group_by(
            Mention.source
        )
    )
    for r in rows.all():
        snap.mentions[r[0]] = r[1]
        snap.ingest_lag[r[0]] = _histogram(r[2:], LAG_BUCKETS)
    return snap


def _lag_seconds(session: AsyncSession) -> ColumnElement[Any]:
    if session.get_bind().dialect.name == "postgresql":
        return cast(extract("epoch", Mention.ingested_at - Mention.created_at), Float)
    # SQLite stores UTC as text; julianday keeps milliseconds, so round to them (else a lag
    # of exactly 1 s could land a few microseconds past its bucket's bound).
    days = func.julianday(Mention.ingested_at) - func.julianday(Mention.created_at)
    return func.round(days * 86400.0, 3)


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
