"""The stats' SQL paths and the data they read, held to their rules on SQLite and PostgreSQL.

The backlog decides stage and time left in SQL; here every combination of pause, breach,
warning and deadline that decides them is written into the tables, and the answer is
compared with the Python twins of the rules (``stage``, ``time_left_bucket``) applied to
the same rows by hand. The counters behind ``/metrics`` must equal a recount of the rows
after real events (and ignore a rolled-back batch); the stats columns of a cycle must equal
its case's and opening post's.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.alert.cases.actions import mark_answered
from services.alert.cases.service import CaseSettings, apply_scored
from services.alert.config import AlertingConfig
from services.alert.routing.assignment import reassign_to
from services.alert.routing.sync import sync_teams_and_rules
from services.alert.sla.policies import SlaPolicy
from services.alert.sla.scheduler import fire_due
from services.alert.sla.store import sync_policies
from services.alert.stats.backlog import backlog, stage, time_left_bucket
from services.alert.stats.counters import read, recount
from services.alert.stats.schemas import STAGES, TIME_LEFT_BUCKETS
from shared.db.engine import make_sessionmaker
from shared.db.migrate import alembic_config
from shared.db.models import Case, Deadline, Mention, ResponseCycle, TeamMember
from shared.db.types import UTCDateTime
from shared.events import ScoredMention
from tests.alert.stats_rows import case_row, cycle_row, mention_row
from tests.factories import raw, scored

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


# ----- what the writers keep: counters, the cycles' stats columns -------------------------

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
POLICY = SlaPolicy(targets={"P1": 600, "P2": 3600, "P3": 7200, "P4": None}, warn_at_fraction=0.5)
S = timedelta(seconds=1)


def _post(ext: str, at: datetime, conversation: str, source: str, **kw: Any) -> ScoredMention:
    level = kw.pop("level", "P1")
    event = scored(raw(ext, at, conversation=conversation, source=source, **kw), level)
    # Ingested a little later than written, to the microsecond (the lag is a float).
    event.mention.ingested_at = at + timedelta(seconds=1.5, microseconds=int(ext) * 37)
    return event


async def _counters(engine: AsyncEngine) -> dict[tuple[str, str, str, str], tuple[int, float]]:
    async with make_sessionmaker(engine)() as s:
        rows = await read(s)
    return {(r.metric, r.source, r.priority, r.le): (r.events, r.total) for r in rows}


async def test_counters_move_with_committed_events_only(engine: AsyncEngine) -> None:
    sessions = make_sessionmaker(engine)
    async with sessions() as s, s.begin():
        await sync_policies(s, [POLICY], T0)

    async def apply(*events: ScoredMention, now: datetime = T0 + 10 * S) -> None:
        async with sessions() as s, s.begin():
            for e in events:
                await apply_scored(s, e, CaseSettings(), now)

    # Answered in time; answered late (breach when answered); a duplicate delivery.
    await apply(
        _post("1", T0, "a", "twitter"),
        _post("2", T0 + 90 * S, "a", "twitter", brand_post=True),
        _post("3", T0, "b", "reddit"),
    )
    await apply(_post("3", T0, "b", "reddit"), now=T0 + 20 * 60 * S)
    await apply(_post("4", T0 + 1200 * S, "b", "reddit", brand_post=True), now=T0 + 1300 * S)
    # The breach fires first, then the answer comes: one breach.
    await apply(_post("5", T0, "c", "twitter", level="P2"))
    assert await fire_due(sessions, ["log"], now=T0 + 2 * 3600 * S) >= 1
    await apply(_post("6", T0 + 3 * 3600 * S, "c", "twitter", brand_post=True))
    # A next cycle (answered late: a breach, no first response) and one marked answered.
    await apply(
        _post("7", T0 + 3 * 3600 * S + 60 * S, "a", "twitter", level="P2"),
        _post("8", T0 + 5 * 3600 * S, "a", "twitter", brand_post=True),
        _post("9", T0, "d", "bluesky", level="P4"),
    )
    async with sessions() as s, s.begin():
        case_d = await s.scalar(select(Case.id).where(Case.conversation_id == "d"))
        assert case_d is not None
        await mark_answered(s, case_d, "ann", T0 + 4000 * S, None)

    # A transaction that rolls back leaves no trace, even in a session used again.
    async with sessions() as s:
        with pytest.raises(RuntimeError):
            async with s.begin():
                await apply_scored(s, _post("10", T0, "e", "rss"), CaseSettings(), T0)
                raise RuntimeError("the batch fails")
        async with s.begin():
            await apply_scored(s, _post("11", T0, "f", "rss", level="P4"), CaseSettings(), T0)

    kept = await _counters(engine)
    assert kept[("breach", "reddit", "P1", "")][0] == 1
    assert kept[("breach", "twitter", "P2", "")][0] == 2  # fired (c), next cycle late (a)
    assert sum(n for k, (n, _) in kept.items() if k[0] == "first_response") == 4
    assert sum(n for k, (n, _) in kept.items() if k[0] == "mention") == 10
    # What the writers kept is what the tables say (as migration 0008 counts them).
    async with sessions() as s, s.begin():
        await recount(s)
    recounted = await _counters(engine)
    assert kept.keys() == recounted.keys()
    for key, (n, total) in kept.items():
        assert recounted[key][0] == n, key
        assert recounted[key][1] == pytest.approx(total, rel=1e-12), key


async def test_cycles_carry_their_case_and_post_facts(engine: AsyncEngine) -> None:
    """The stats columns copied onto a cycle when it is inserted, by the application or by
    anyone writing rows, equal what the case and the opening post say."""
    sessions = make_sessionmaker(engine)
    care = {"name": "care", "members": [{"handle": "ann"}, {"handle": "bob"}]}
    routing = [{"name": "twitter", "when": {"source": ["twitter"]}, "team": "care"}]
    async with sessions() as s, s.begin():
        await sync_policies(s, [POLICY], T0)
        config = AlertingConfig.model_validate({"teams": [care], "routing": routing})
        await sync_teams_and_rules(s, config, T0)
        for event in (
            _post("1", T0, "a", "twitter"),
            _post("2", T0 + 60 * S, "a", "twitter", brand_post=True),
            _post("3", T0 + 120 * S, "a", "twitter", level="P3"),
            _post("4", T0, "b", "reddit", level="P4"),
            _post("5", T0, "c", "twitter"),
        ):
            await apply_scored(s, event, CaseSettings(), T0 + 200 * S)
        s.add(mention_row("x1", "rss", T0, lag=0.25, sentiment="neutral", complaint=0.1))
        case = case_row("x", "rss", "P2", T0, brand="zeta", language="it")
        s.add(case)
        await s.flush()
        s.add(cycle_row(case.id, 1, T0, "x1", "P2"))
    # Given to someone else, then to a team of its own: both cycles of "a" follow.
    async with sessions() as s, s.begin():
        a = await s.scalar(select(Case).where(Case.conversation_id == "a"))
        assert a is not None and a.assignee_id is not None and a.cycles == 2
        held = await s.get(TeamMember, a.assignee_id)
        assert held is not None
        other = await reassign_to(s, a, "bob" if held.handle == "ann" else "ann", T0, "test")
        assert other.id != held.id
    async with sessions() as s:
        rows = (
            await s.execute(
                select(ResponseCycle, Case, Mention)
                .join(Case, Case.id == ResponseCycle.case_id)
                .join(Mention, Mention.event_id == ResponseCycle.started_event_id)
                .order_by(ResponseCycle.id)
            )
        ).all()
    assert len(rows) == 5
    for cycle, case, post in rows:
        assert (cycle.source, cycle.brand, cycle.language) == (
            case.source,
            case.brand,
            case.language,
        )
        assert (cycle.team_id, cycle.assignee_id) == (case.team_id, case.assignee_id)
        assert (cycle.sentiment, cycle.complaint_score) == (post.sentiment, post.complaint_score)
        assert cycle.ingest_lag_seconds == (post.ingested_at - post.created_at).total_seconds()
    assert rows[-1][0].ingest_lag_seconds == 0.25 and rows[-1][0].language == "it"
    assert sum(cycle.assignee_id is not None for cycle, _, _ in rows) == 3  # a (2), c


# ----- migrations 0007 and 0008 on rows that were there before ----------------------------


async def test_migrations_fill_the_rows_already_there(db_url: str, engine: AsyncEngine) -> None:
    cfg = alembic_config(db_url)
    await asyncio.to_thread(command.downgrade, cfg, "0006")
    when = UTCDateTime()
    cases = sa.table(
        "cases",
        *(sa.column(c) for c in ("id", "conversation_id", "brand", "source", "status")),
        *(sa.column(c) for c in ("priority", "cycles", "language", "team_id", "assignee_id")),
        *(sa.column(c, when) for c in ("opened_at", "created_at", "updated_at")),
    )
    posts = sa.table(
        "mentions",
        *(sa.column(c) for c in ("event_id", "source", "external_id", "conversation_id")),
        *(sa.column(c) for c in ("brand", "author_id", "is_brand", "text", "lang", "sentiment")),
        *(sa.column(c) for c in ("negative_score", "complaint_score", "urgency_score")),
        *(sa.column(c) for c in ("priority", "model_version")),
        sa.column("reasons", sa.JSON()),
        *(sa.column(c, when) for c in ("created_at", "ingested_at", "stored_at")),
    )
    cycles = sa.table(
        "response_cycles",
        *(sa.column(c) for c in ("id", "case_id", "seq", "kind", "started_event_id")),
        *(sa.column(c) for c in ("priority", "target_seconds", "response_seconds", "breached")),
        *(sa.column(c, when) for c in ("started_at", "due_at", "answered_at")),
    )
    # Ids far apart, so the batched fill on PostgreSQL takes several batches.
    made = [
        (1, "twitter", "acme", "en", 1.25, "negative", 0.9),
        (60_000, "reddit", "zeta", "it", 0.000004, "neutral", 0.2),
        (120_001, "rss", "nova", None, None, None, None),  # its opening post is missing
    ]
    async with engine.begin() as conn:
        # The reddit case is care's, held by ann (ids 7 and 8).
        await conn.execute(
            sa.text(
                "INSERT INTO teams (id, name, channels, active, updated_at)"
                " VALUES (7, 'care', '{}', true, :at)"
            ),
            {"at": T0.replace(tzinfo=None)},
        )
        await conn.execute(
            sa.text(
                "INSERT INTO team_members (id, team_id, handle, name, role, active)"
                " VALUES (8, 7, 'ann', 'Ann', 'agent', true)"
            )
        )
        for cid, source, brand, language, lag, sentiment, complaint in made:
            values = {"id": cid, "conversation_id": f"m{cid}", "brand": brand, "source": source}
            owner = {"team_id": 7, "assignee_id": 8} if source == "reddit" else {}
            await conn.execute(
                cases.insert().values(
                    **values,
                    **owner,
                    status="answered",
                    priority="P1",
                    cycles=1,
                    language=language,
                    opened_at=T0,
                    created_at=T0,
                    updated_at=T0,
                )
            )
            if lag is not None:
                await conn.execute(
                    posts.insert().values(
                        event_id=f"e{cid}",
                        source=source,
                        external_id=str(cid),
                        conversation_id=f"m{cid}",
                        brand=brand,
                        author_id="u",
                        is_brand=False,
                        text="help",
                        lang="en",
                        sentiment=sentiment,
                        negative_score=0.5,
                        complaint_score=complaint,
                        urgency_score=0.5,
                        priority="P1",
                        reasons={},
                        model_version="test",
                        created_at=T0,
                        ingested_at=T0 + timedelta(seconds=lag),
                        stored_at=T0,
                    )
                )
            # Answered after 90 s (twitter), late without the flag (reddit), never (rss).
            answered = {1: 90.0, 60_000: 900.0}.get(cid)
            await conn.execute(
                cycles.insert().values(
                    id=cid,
                    case_id=cid,
                    seq=1,
                    kind="first",
                    started_event_id=f"e{cid}",
                    priority="P1",
                    target_seconds=600.0,
                    breached=False,
                    started_at=T0,
                    due_at=T0 + timedelta(seconds=600),
                    response_seconds=answered,
                    answered_at=None if answered is None else T0 + timedelta(seconds=answered),
                )
            )
    await asyncio.to_thread(command.upgrade, cfg, "head")

    sessions = make_sessionmaker(engine)
    async with sessions() as s:
        got = {c.id: c for c in (await s.scalars(select(ResponseCycle))).all()}
        migrated = {(r.metric, r.source, r.priority, r.le): r.events for r in await read(s)}
    for cid, source, brand, language, lag, sentiment, complaint in made:
        cycle = got[cid]
        assert (cycle.source, cycle.brand, cycle.language) == (source, brand, language)
        assert (cycle.sentiment, cycle.complaint_score) == (sentiment, complaint)
        assert cycle.ingest_lag_seconds == lag  # exact, to the microsecond
        owner = (7, 8) if source == "reddit" else (None, None)
        assert (cycle.team_id, cycle.assignee_id) == owner
    assert migrated == {
        ("mention", "twitter", "", "2.0"): 1,
        ("mention", "reddit", "", "0.5"): 1,
        ("first_response", "twitter", "", "120.0"): 1,
        ("first_response", "reddit", "", "900.0"): 1,
        ("breach", "reddit", "P1", ""): 1,
    }
    # What the migration counted is what the application's recount says.
    async with sessions() as s, s.begin():
        await recount(s)
    async with sessions() as s:
        assert {(r.metric, r.source, r.priority, r.le): r.events for r in await read(s)} == migrated
