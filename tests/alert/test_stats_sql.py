"""The stats' SQL paths held to their rules, on SQLite and PostgreSQL.

The backlog decides stage and time left in SQL; here every combination of pause, breach,
warning and deadline that decides them is written into the tables, and the answer is
compared with the Python twins of the rules (``stage``, ``time_left_bucket``) applied to
the same rows by hand.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from services.alert.stats.backlog import backlog, stage, time_left_bucket
from services.alert.stats.schemas import STAGES, TIME_LEFT_BUCKETS
from shared.db.engine import make_sessionmaker
from shared.db.models import Deadline
from tests.alert.stats_rows import case_row, cycle_row, mention_row

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
M = timedelta(minutes=1)

# Deadlines around every bucket bound, the bounds themselves included.
DUE = [None, -60 * M, 0 * M, 5 * M, 15 * M, 30 * M, 60 * M, 120 * M, 240 * M, 600 * M, 1440 * M]
DUE += [2000 * M]
# How the clock can be stopped: not at all, cycle paused, waiting on the customer,
# snoozed until later, snoozed until a time already past (not paused any more).
PAUSES = ["none", "cycle", "customer", "snoozed", "snooze_over"]
# Deadlines rows of the cycle: none, a fired warning, a pending warning, a fired breach.
DEADLINES = ["none", "warning_fired", "warning_pending", "breach_fired"]


@dataclass
class Made:
    case_id: int
    conversation: str
    started_at: datetime
    cycle_id: int
    source: str
    priority: str
    expected_stage: str
    expected_bucket: str


async def _fill(engine: AsyncEngine) -> list[Made]:
    """One open case per combination, plus cases the backlog must leave out."""
    sessions = make_sessionmaker(engine)
    made: list[Made] = []
    combos = list(itertools.product(DUE, PAUSES, DEADLINES, [False, True]))
    async with sessions() as s, s.begin():
        for n, (due, pause, deadlines, flag) in enumerate(combos):
            source = ("twitter", "reddit", "bluesky")[n % 3]
            priority = ("P1", "P2", "P3", "P4")[(n // 3) % 4]
            # Starts repeat (n // 2), so the listing's tie on started_at is broken by id.
            start = NOW - timedelta(hours=30) + (n // 2) * M
            event = f"bl-{n:06d}"
            s.add(mention_row(event, source, start))
            case = case_row(f"bl-{n}", source, priority, start)
            case.waiting_on_customer = pause == "customer"
            if pause == "snoozed":
                case.snoozed_until = NOW + 10 * M
            elif pause == "snooze_over":
                case.snoozed_until = NOW - 10 * M
            s.add(case)
            await s.flush()
            cycle = cycle_row(case.id, 1, start, event, priority)
            cycle.due_at = None if due is None else NOW + due
            cycle.target_seconds = None if due is None else 3600
            cycle.breached = flag
            cycle.paused_at = NOW - M if pause == "cycle" else None
            s.add(cycle)
            await s.flush()
            if deadlines != "none":
                s.add(
                    Deadline(
                        case_id=case.id,
                        cycle_id=cycle.id,
                        stage="breach" if deadlines == "breach_fired" else "warning:0.5",
                        fraction=1.0 if deadlines == "breach_fired" else 0.5,
                        due_at=start,
                        status="pending" if deadlines == "warning_pending" else "fired",
                        fired_at=None if deadlines == "warning_pending" else start,
                    )
                )
            paused = pause in ("cycle", "customer", "snoozed")
            time_left = None if due is None else due.total_seconds()
            breached = flag or (time_left is not None and time_left <= 0)
            made.append(
                Made(
                    case.id,
                    case.conversation_id,
                    start,
                    cycle.id,
                    source,
                    priority,
                    stage(paused, breached, deadlines == "warning_fired"),
                    time_left_bucket(time_left, paused),
                )
            )

        # A case with two waiting cycles: the later one is the one that counts.
        start = NOW - timedelta(days=3)
        s.add(mention_row("bl-two-1", "twitter", start))
        s.add(mention_row("bl-two-2", "twitter", start + M))
        case = case_row("bl-10000", "twitter", "P1", start, cycles=2)
        s.add(case)
        await s.flush()
        first = cycle_row(case.id, 1, start, "bl-two-1", "P1", due_at=NOW - M, breached=True)
        second = cycle_row(case.id, 2, start + M, "bl-two-2", "P1", due_at=NOW + 30 * M)
        s.add_all([first, second])
        await s.flush()
        made.append(
            Made(
                case.id,
                "bl-10000",
                start + M,
                second.id,
                "twitter",
                "P1",
                "not_warned",
                "15m_to_1h",
            )
        )

        # Left out: an answered case, and an open case whose cycle is answered.
        for n, status in ((10_001, "answered"), (10_002, "open")):
            event = f"bl-{n}"
            s.add(mention_row(event, "twitter", start))
            case = case_row(event, "twitter", "P1", start - timedelta(days=1), status=status)
            s.add(case)
            await s.flush()
            s.add(
                cycle_row(
                    case.id,
                    1,
                    start - timedelta(days=1),
                    event,
                    "P1",
                    answered_at=start,
                    response_seconds=86400.0,
                )
            )
    return made


def _expected_counts(made: list[Made]) -> tuple[dict[str, int], dict[str, int], dict]:
    stages = Counter(m.expected_stage for m in made)
    buckets = Counter(m.expected_bucket for m in made)
    cells = Counter((m.expected_stage, m.expected_bucket) for m in made)
    matrix: dict[str, dict[str, int]] = {}
    for (st, b), n in cells.items():
        matrix.setdefault(st, {})[b] = n
    return (
        {s: stages[s] for s in STAGES},
        {b: buckets[b] for b in TIME_LEFT_BUCKETS},
        matrix,
    )


async def test_backlog_counts_and_listing_follow_the_rules(engine: AsyncEngine) -> None:
    made = await _fill(engine)
    sessions = make_sessionmaker(engine)
    async with sessions() as s:
        got = await backlog(s, NOW, {}, limit=25)
    by_stage, by_time_left, matrix = _expected_counts(made)
    assert got.open == len(made)
    assert got.by_stage == by_stage
    assert got.by_time_left == by_time_left
    assert got.by_stage_and_time_left == matrix
    # Every stage and bucket occurs, so none of the rules went untested.
    assert all(by_stage.values()) and all(by_time_left.values())
    assert got.truncated and len(got.cases) == 25

    ordered = sorted(made, key=lambda m: (m.started_at, m.cycle_id))
    assert [c.case_id for c in got.cases] == [m.case_id for m in ordered[:25]]
    for c, m in zip(got.cases, ordered, strict=False):
        assert (c.stage, c.time_left) == (m.expected_stage, m.expected_bucket), m
        assert c.waiting_seconds == (NOW - m.started_at).total_seconds()
        if c.time_left in ("paused", "no_target"):
            assert c.time_left_seconds is None
        else:
            assert c.due_at is not None
            assert c.time_left_seconds == (c.due_at - NOW).total_seconds()

    # Filters: a case field and a cycle field together; all of them listed.
    async with sessions() as s:
        got = await backlog(s, NOW, {"source": ("twitter",), "priority": ("P1", "P3")}, 1000)
    chosen = [m for m in made if m.source == "twitter" and m.priority in ("P1", "P3")]
    by_stage, by_time_left, matrix = _expected_counts(chosen)
    assert got.open == len(chosen) and not got.truncated
    assert (got.by_stage, got.by_time_left, got.by_stage_and_time_left) == (
        by_stage,
        by_time_left,
        matrix,
    )
    ordered = sorted(chosen, key=lambda m: (m.started_at, m.cycle_id))
    assert [c.case_id for c in got.cases] == [m.case_id for m in ordered]
    two = next(c for c in got.cases if c.conversation_id == "bl-10000")
    assert (two.cycle, two.stage, two.time_left) == (2, "not_warned", "15m_to_1h")
