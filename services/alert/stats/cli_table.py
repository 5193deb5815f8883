"""The `thirdring stats` table: the same report as the API, printed for people."""

from __future__ import annotations

from rich.table import Table

from services.alert.stats.schemas import Figures, ResponseTimesReport


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s"


def _row(label: list[str], fig: Figures) -> list[str]:
    ratio = fig.within_target_ratio
    r = fig.response_seconds
    return [
        *label,
        str(fig.cases),
        str(fig.answered),
        _duration(r.p50),
        _duration(r.p90),
        _duration(r.p95),
        _duration(r.p99),
        _duration(r.mean),
        "-" if ratio is None else f"{ratio:.1%}",
        str(fig.breaches),
    ]


def report_table(report: ResponseTimesReport) -> Table:
    title = (
        f"{report.kind} response, {report.clock} clock, "
        f"{report.since:%Y-%m-%d %H:%M} – {report.until:%Y-%m-%d %H:%M} UTC"
    )
    table = Table(title=title)
    for name in report.group_by:
        table.add_column(name)
    for name in ("cases", "answered", "p50", "p90", "p95", "p99", "mean", "within", "breaches"):
        table.add_column(name, justify="right")
    for group in report.groups:
        table.add_row(*_row([str(group.key[g]) for g in report.group_by], group))
    if report.group_by:
        table.add_section()
    table.add_row(*_row(["all"] + [""] * (len(report.group_by) - 1), report), style="bold")
    return table
