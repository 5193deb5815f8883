"""CSV of the stats: one row per group (or per interval), the figures flattened.

Columns: the group keys (or ``start``, ``end``), then ``cases, cycles, answered,
unanswered, response_p50 … response_mean, with_target, decided, within_target,
within_target_ratio, breaches, ingest_lag_p50 … ingest_lag_mean``. Empty cell = null.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from typing import Any

from services.alert.stats.schemas import Figures, ResponseTimesReport, Timeseries

_PCTS = ("p50", "p90", "p95", "p99", "mean")
FIGURE_COLUMNS = (
    "cases",
    "cycles",
    "answered",
    "unanswered",
    *(f"response_{p}" for p in _PCTS),
    "with_target",
    "decided",
    "within_target",
    "within_target_ratio",
    "breaches",
    *(f"ingest_lag_{p}" for p in _PCTS),
)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)  # round-trips exactly
    return str(value)


def flatten(fig: Figures) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in ("cases", "cycles", "answered", "unanswered"):
        out[name] = getattr(fig, name)
    for p in _PCTS:
        out[f"response_{p}"] = getattr(fig.response_seconds, p)
    for name in ("with_target", "decided", "within_target", "within_target_ratio", "breaches"):
        out[name] = getattr(fig, name)
    for p in _PCTS:
        out[f"ingest_lag_{p}"] = getattr(fig.ingest_lag_seconds, p)
    return out


def _write(header: Sequence[str], rows: Iterable[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([_cell(row[h]) for h in header])
    return buf.getvalue()


def report_csv(report: ResponseTimesReport) -> str:
    """One row per group; without group_by, one row of totals."""
    keys = list(report.group_by)
    if not keys:
        return _write(FIGURE_COLUMNS, [flatten(report)])
    rows = ({**g.key, **flatten(g)} for g in report.groups)
    return _write([*keys, *FIGURE_COLUMNS], rows)


def timeseries_csv(series: Timeseries) -> str:
    rows = (
        {"start": p.start.isoformat(), "end": p.end.isoformat(), **flatten(p)}
        for p in series.points
    )
    return _write(["start", "end", *FIGURE_COLUMNS], rows)
