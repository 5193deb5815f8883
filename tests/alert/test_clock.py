"""The SLA clock end to end on SQLite and PostgreSQL, with a controlled clock.

Every instant is passed in (``now=``), nothing sleeps, and each expected deadline below is
worked out by hand from the rules in docs/sla.md.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from services.alert.api.cases import _detail
from services.alert.cases import actions
from services.alert.cases.service import CaseSettings, apply_scored
from services.alert.config import AlertingConfig, MemberSpec, RoutingRuleSpec, TeamSpec
from services.alert.routing.sync import sync_teams_and_rules
from services.alert.sla.calendars import Calendar
from services.alert.sla.policies import Conditions, EscalationStep, SlaPolicy
from services.alert.sla.scheduler import fire_due
from services.alert.sla.store import save_policy, sync_policies
from shared.db.engine import make_sessionmaker
from shared.db.models import (
    Case,
    CaseEvent,
    Deadline,
    OutboxMessage,
    ResponseCycle,
    SlaPolicyVersion,
)
from tests.factories import raw, scored

Sessions = async_sessionmaker[AsyncSession]

ROME = ZoneInfo("Europe/Rome")  # CET (UTC+1) in November 2026
TALLINN = ZoneInfo("Europe/Tallinn")  # EET (UTC+2) in November 2026
T0 = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)  # a Monday
MIN = timedelta(minutes=1)
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri")


def rome(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute, tzinfo=ROME)


def office(zone: str, holidays: list[date] | None = None) -> Calendar:
    """Mon-Fri 09:00-13:00 and 14:00-18:00 (a lunch break) in ``zone``."""
    return Calendar(
        name=f"office-{zone}",
        timezone=zone,
        windows={d: ["09:00-13:00", "14:00-18:00"] for d in WEEKDAYS},
        holidays=holidays or [],
    )


def office_policy(calendar: Calendar, name: str = "office", **kw: object) -> SlaPolicy:
    return SlaPolicy(name=name, targets={"P1": 3600}, calendar=calendar, warn_at=[0.5], **kw)


# Wall clock; the default warn_at (0.5 and 0.8) and the default escalation chain.
WALL = SlaPolicy(targets={"P1": 600, "P2": 3600, "P3": 7200, "P4": None})


async def _sessions(engine: AsyncEngine, *policies: SlaPolicy, now: datetime = T0) -> Sessions:
    sessions = make_sessionmaker(engine)
    async with sessions() as s, s.begin():
        await sync_policies(s, list(policies), now)
    return sessions


async def _post(sessions: Sessions, event: object, now: datetime) -> str:
    async with sessions() as s, s.begin():
        return (await apply_scored(s, event, CaseSettings(), now)).action  # type: ignore[arg-type]


async def _act(
    sessions: Sessions, conversation: str, fn: Callable[[AsyncSession, int], Awaitable[object]]
) -> None:
    async with sessions() as s, s.begin():
        case_id = await s.scalar(select(Case.id).where(Case.conversation_id == conversation))
        assert case_id is not None
        await fn(s, case_id)


async def _team(sessions: Sessions, reassign_after: float | None = None) -> None:
    config = AlertingConfig(
        teams=[
            TeamSpec(
                name="care",
                reassign_after_seconds=reassign_after,
                members=[MemberSpec(handle="ann"), MemberSpec(handle="bob")],
            )
        ],
        routing=[RoutingRuleSpec(name="all", team="care")],
    )
    async with sessions() as s, s.begin():
        await sync_teams_and_rules(s, config, T0)


async def _case(sessions: Sessions, conversation: str = "c1") -> Case:
    async with sessions() as s:
        case = await s.scalar(select(Case).where(Case.conversation_id == conversation))
    assert case is not None
    return case


async def _cycle(
    sessions: Sessions, conversation: str = "c1", seq: int | None = None
) -> ResponseCycle:
    async with sessions() as s:
        case = await s.scalar(select(Case).where(Case.conversation_id == conversation))
        assert case is not None
        cycle = await s.scalar(
            select(ResponseCycle).where(
                ResponseCycle.case_id == case.id, ResponseCycle.seq == (seq or case.cycles)
            )
        )
    assert cycle is not None
    return cycle


async def _deadlines(
    sessions: Sessions, conversation: str = "c1", seq: int | None = None
) -> dict[str, tuple[datetime, str]]:
    """{stage: (due_at, status)} of one cycle (default: the current one)."""
    cycle = await _cycle(sessions, conversation, seq)
    async with sessions() as s:
        rows = await s.scalars(select(Deadline).where(Deadline.cycle_id == cycle.id))
        return {d.stage: (d.due_at, d.status) for d in rows}


async def _timeline(sessions: Sessions, conversation: str = "c1") -> list[CaseEvent]:
    case = await _case(sessions, conversation)
    async with sessions() as s:
        rows = await s.scalars(
            select(CaseEvent).where(CaseEvent.case_id == case.id).order_by(CaseEvent.id)
        )
        return list(rows)


# --- business hours ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("posted", "holidays", "warning", "breach"),
    [
        # 30 min on Friday (the warning at 50% falls exactly at closing), 30 on Monday.
        (rome(6, 17, 30), [], rome(6, 18), rome(9, 9, 30)),
        # Monday 9 November is a holiday: the second half of the hour is on Tuesday.
        (rome(6, 17, 30), [date(2026, 11, 9)], rome(6, 18), rome(10, 9, 30)),
        # Wednesday 12:30: 30 min before lunch, 30 after; the lunch hour moves the breach
        # from 13:30 (wall clock) to 14:30.
        (rome(4, 12, 30), [], rome(4, 13), rome(4, 14, 30)),
        # Saturday 11:00: the clock starts at Monday's opening.
        (rome(7, 11), [], rome(9, 9, 30), rome(9, 10)),
    ],
    ids=["friday", "monday-holiday", "lunch-break", "weekend"],
)
async def test_business_hours(
    engine: AsyncEngine,
    posted: datetime,
    holidays: list[date],
    warning: datetime,
    breach: datetime,
) -> None:
    sessions = await _sessions(engine, office_policy(office("Europe/Rome", holidays)))
    assert await _post(sessions, scored(raw("1", posted)), posted) == "opened"

    cycle = await _cycle(sessions)
    assert cycle.business_time and cycle.target_seconds == 3600
    assert cycle.due_at == breach
    assert await _deadlines(sessions) == {
        "warning:0.5": (warning, "pending"),
        "breach": (breach, "pending"),
    }
    opened = (await _timeline(sessions))[0]
    assert opened.kind == "opened" and opened.data["due_at"] == breach.astimezone(UTC).isoformat()


async def test_business_hours_in_utc_terms(engine: AsyncEngine) -> None:
    """The same Friday case as plain UTC instants (Rome is UTC+1 in November)."""
    sessions = await _sessions(engine, office_policy(office("Europe/Rome")))
    posted = datetime(2026, 11, 6, 16, 30, tzinfo=UTC)  # Fri 17:30 Rome
    await _post(sessions, scored(raw("1", posted)), posted)
    assert await _deadlines(sessions) == {
        "warning:0.5": (datetime(2026, 11, 6, 17, 0, tzinfo=UTC), "pending"),
        "breach": (datetime(2026, 11, 9, 8, 30, tzinfo=UTC), "pending"),
    }
    # Nothing fires over the weekend; the breach fires on Monday at 09:30 Rome.
    assert await fire_due(sessions, ["log"], now=datetime(2026, 11, 6, 17, 0, tzinfo=UTC)) == 1
    monday = datetime(2026, 11, 9, 8, 29, 59, tzinfo=UTC)
    assert await fire_due(sessions, ["log"], now=monday) == 0
    assert await fire_due(sessions, ["log"], now=monday + timedelta(seconds=1)) == 1
    # Answered Monday 09:45 Rome: 30 min on Friday and 45 on Monday count (the stats'
    # business clock), against 64 h 15 min on the wall clock.
    answer_at = datetime(2026, 11, 9, 8, 45, tzinfo=UTC)
    assert await _post(sessions, scored(raw("2", answer_at, brand_post=True)), answer_at) == (
        "answered"
    )
    cycle = await _cycle(sessions)
    assert cycle.response_seconds == (64 * 60 + 15) * 60
    assert cycle.business_response_seconds == 75 * 60


async def test_time_zone_of_the_calendar(engine: AsyncEngine) -> None:
    """Same windows, same post, two zones: Tallinn (UTC+2) opens an hour before Rome."""
    sessions = await _sessions(
        engine,
        office_policy(office("Europe/Rome"), "rome", when=Conditions(source=["it"])),
        office_policy(office("Europe/Tallinn"), "tallinn", when=Conditions(source=["ee"])),
    )
    posted = rome(6, 17, 30)  # Friday; 18:30 in Tallinn, already closed there
    await _post(sessions, scored(raw("1", posted, conversation="it", source="it")), posted)
    await _post(sessions, scored(raw("2", posted, conversation="ee", source="ee")), posted)

    # Rome: 30 min on Friday + 30 min from Monday 09:00 Rome.
    assert (await _cycle(sessions, "it")).due_at == datetime(2026, 11, 9, 8, 30, tzinfo=UTC)
    # Tallinn: the whole hour from Monday 09:00 Tallinn (07:00 UTC).
    tallinn = await _deadlines(sessions, "ee")
    assert tallinn == {
        "warning:0.5": (datetime(2026, 11, 9, 9, 30, tzinfo=TALLINN), "pending"),
        "breach": (datetime(2026, 11, 9, 10, 0, tzinfo=TALLINN), "pending"),
    }
    assert tallinn["breach"][0] == datetime(2026, 11, 9, 8, 0, tzinfo=UTC)


# --- pauses -----------------------------------------------------------------------------


async def test_wait_and_resume_moves_every_pending_stage(engine: AsyncEngine) -> None:
    """docs/sla.md: P2 = 1 h, post at 10:00, waiting 10:10-10:40 -> every stage +30 min."""
    sessions = await _sessions(engine, WALL)
    await _post(sessions, scored(raw("1", T0), level="P2"), T0)
    assert await _deadlines(sessions) == {
        "warning:0.5": (T0 + 30 * MIN, "pending"),
        "warning:0.8": (T0 + 48 * MIN, "pending"),
        "breach": (T0 + 60 * MIN, "pending"),
    }

    await _act(sessions, "c1", lambda s, c: actions.wait_on_customer(s, c, "ann", T0 + 10 * MIN))
    assert {st for _, st in (await _deadlines(sessions)).values()} == {"paused"}
    assert (await _case(sessions)).waiting_on_customer
    # Paused stages never fire, even long past their old time.
    assert await fire_due(sessions, ["log"], now=T0 + 39 * MIN) == 0

    await _act(sessions, "c1", lambda s, c: actions.resume(s, c, "ann", T0 + 40 * MIN))
    assert await _deadlines(sessions) == {
        "warning:0.5": (T0 + 60 * MIN, "pending"),
        "warning:0.8": (T0 + 78 * MIN, "pending"),
        "breach": (T0 + 90 * MIN, "pending"),
    }
    cycle = await _cycle(sessions)
    assert cycle.due_at == T0 + 90 * MIN
    assert cycle.paused_seconds == 1800 and cycle.paused_at is None
    assert not (await _case(sessions)).waiting_on_customer
    # Answered at 11:10: 70 min on the wall clock; the business clock (a wall-clock policy
    # here) leaves out the 30 paused minutes.
    answer_at = T0 + 70 * MIN
    await _post(sessions, scored(raw("2", answer_at, brand_post=True)), answer_at)
    cycle = await _cycle(sessions)
    assert (cycle.response_seconds, cycle.business_response_seconds) == (4200, 2400)


async def test_snooze_ends_by_itself_and_resumes_the_clock(engine: AsyncEngine) -> None:
    sessions = await _sessions(engine, WALL)
    await _post(sessions, scored(raw("1", T0), level="P2"), T0)
    until = T0 + 25 * MIN
    await _act(sessions, "c1", lambda s, c: actions.snooze(s, c, "ann", T0 + 10 * MIN, until))
    assert await _deadlines(sessions) == {
        "warning:0.5": (T0 + 30 * MIN, "paused"),
        "warning:0.8": (T0 + 48 * MIN, "paused"),
        "breach": (T0 + 60 * MIN, "paused"),
        "snooze_end": (until, "pending"),
    }
    assert (await _case(sessions)).snoozed_until == until

    assert await fire_due(sessions, ["log"], now=until - timedelta(seconds=1)) == 0
    # The scheduler gets to it 3 s late (e.g. after a restart); the snooze still ended at
    # 10:25, so paused 10:10-10:25: every stage moves by 15 min.
    assert await fire_due(sessions, ["log"], now=until + timedelta(seconds=3)) == 1

    assert await _deadlines(sessions) == {
        "warning:0.5": (T0 + 45 * MIN, "pending"),
        "warning:0.8": (T0 + 63 * MIN, "pending"),
        "breach": (T0 + 75 * MIN, "pending"),
        "snooze_end": (until, "fired"),
    }
    cycle = await _cycle(sessions)
    assert cycle.due_at == T0 + 75 * MIN and cycle.paused_at is None
    assert cycle.paused_seconds == 900
    assert (await _case(sessions)).snoozed_until is None
    assert (await _timeline(sessions))[-1].kind == "snooze_ended"
    # Nothing is sent for a snooze ending.
    async with sessions() as s:
        assert list(await s.scalars(select(OutboxMessage))) == []


async def test_customer_writing_again_resumes_a_waiting_case(engine: AsyncEngine) -> None:
    sessions = await _sessions(engine, WALL)
    await _post(sessions, scored(raw("1", T0), level="P2"), T0)
    await _act(sessions, "c1", lambda s, c: actions.wait_on_customer(s, c, "ann", T0 + 10 * MIN))
    # The customer writes at 10:40; ingest sees it a minute later. The clock counts from the
    # post's own time, so the pause is 30 min, not 31.
    reply = scored(raw("2", T0 + 40 * MIN), level="P2")
    assert await _post(sessions, reply, T0 + 41 * MIN) == "resumed"

    case, cycle = await _case(sessions), await _cycle(sessions)
    assert not case.waiting_on_customer and cycle.paused_at is None
    assert cycle.paused_seconds == 1800 and cycle.due_at == T0 + 90 * MIN
    assert await _deadlines(sessions) == {
        "warning:0.5": (T0 + 60 * MIN, "pending"),
        "warning:0.8": (T0 + 78 * MIN, "pending"),
        "breach": (T0 + 90 * MIN, "pending"),
    }
    assert [e.kind for e in await _timeline(sessions)][-2:] == [
        "waiting_on_customer",
        "customer_replied",
    ]


# --- next response, priority, policy versions ------------------------------------------


async def test_next_response_cycle_uses_the_next_response_target(engine: AsyncEngine) -> None:
    policy = SlaPolicy(targets={"P1": 600}, next_response={"P1": 1200}, warn_at=[0.5])
    sessions = await _sessions(engine, policy)
    await _post(sessions, scored(raw("1", T0)), T0)
    await _post(sessions, scored(raw("2", T0 + 5 * MIN, brand_post=True)), T0 + 5 * MIN)
    assert await _post(sessions, scored(raw("3", T0 + 20 * MIN)), T0 + 20 * MIN) == "next_cycle"

    first = await _deadlines(sessions, seq=1)
    assert {st for _, st in first.values()} == {"cancelled"}
    cycle = await _cycle(sessions)
    assert (cycle.seq, cycle.kind, cycle.target_seconds) == (2, "next", 1200)
    assert cycle.started_at == T0 + 20 * MIN and cycle.due_at == T0 + 40 * MIN
    assert await _deadlines(sessions) == {
        "warning:0.5": (T0 + 30 * MIN, "pending"),
        "breach": (T0 + 40 * MIN, "pending"),
    }
    case = await _case(sessions)
    assert case.status == "open" and case.cycles == 2 and case.answered_at is None


async def test_priority_rise_shortens_the_target_and_keeps_fired_stages(
    engine: AsyncEngine,
) -> None:
    policy = SlaPolicy(targets={"P1": 3600, "P3": 7200}, warn_at=[0.25, 0.75])
    sessions = await _sessions(engine, policy)
    await _post(sessions, scored(raw("1", T0), level="P3"), T0)
    assert await _deadlines(sessions) == {
        "warning:0.25": (T0 + 30 * MIN, "pending"),
        "warning:0.75": (T0 + 90 * MIN, "pending"),
        "breach": (T0 + 120 * MIN, "pending"),
    }
    assert await fire_due(sessions, ["log"], now=T0 + 30 * MIN) == 1

    follow_up = scored(raw("2", T0 + 40 * MIN), level="P1")
    assert await _post(sessions, follow_up, T0 + 40 * MIN) == "raised"
    # T is now 1 h from the same start: 0.75 -> 10:45, breach -> 11:00. The fired warning
    # (which would be 10:15 now) stays as it was and is not created again.
    assert await _deadlines(sessions) == {
        "warning:0.25": (T0 + 30 * MIN, "fired"),
        "warning:0.75": (T0 + 45 * MIN, "pending"),
        "breach": (T0 + 60 * MIN, "pending"),
    }
    cycle, case = await _cycle(sessions), await _case(sessions)
    assert (cycle.priority, case.priority, cycle.target_seconds) == ("P1", "P1", 3600)
    assert cycle.due_at == T0 + 60 * MIN

    assert await fire_due(sessions, ["log"], now=T0 + 45 * MIN) == 1
    assert await fire_due(sessions, ["log"], now=T0 + 60 * MIN) == 1
    assert await fire_due(sessions, ["log"], now=T0 + 61 * MIN) == 0
    async with sessions() as s:
        sent = [m.stage for m in await s.scalars(select(OutboxMessage).order_by(OutboxMessage.id))]
    assert sent == ["warning:0.25", "warning:0.75", "breach"]


async def test_policy_edit_applies_to_new_cases_only(engine: AsyncEngine) -> None:
    v1 = SlaPolicy(targets={"P1": 600}, warn_at=[0.5])
    sessions = await _sessions(engine, v1)
    await _post(sessions, scored(raw("1", T0, conversation="old")), T0)

    v2 = SlaPolicy(targets={"P1": 1200}, warn_at=[0.5])
    async with sessions() as s, s.begin():
        row = await save_policy(s, v2, T0 + MIN)
        v2_id = row.id
        assert row.version == 2
    async with sessions() as s:
        versions = {r.version: (r.id, r.active) for r in await s.scalars(select(SlaPolicyVersion))}
    v1_id = versions[1][0]
    assert versions == {1: (v1_id, False), 2: (v2_id, True)}

    await _post(sessions, scored(raw("2", T0 + 2 * MIN, conversation="new")), T0 + 2 * MIN)

    assert (await _case(sessions, "old")).policy_id == v1_id
    assert await _deadlines(sessions, "old") == {
        "warning:0.5": (T0 + 5 * MIN, "pending"),
        "breach": (T0 + 10 * MIN, "pending"),
    }
    assert (await _case(sessions, "new")).policy_id == v2_id
    assert await _deadlines(sessions, "new") == {
        "warning:0.5": (T0 + 12 * MIN, "pending"),
        "breach": (T0 + 22 * MIN, "pending"),
    }
    # The old case's next cycle still counts in its own version (10 min, not 20).
    reply = scored(raw("3", T0 + 3 * MIN, conversation="old", brand_post=True))
    await _post(sessions, reply, T0 + 3 * MIN)
    await _post(sessions, scored(raw("4", T0 + 4 * MIN, conversation="old")), T0 + 4 * MIN)
    assert (await _cycle(sessions, "old")).due_at == T0 + 14 * MIN


# --- escalation -------------------------------------------------------------------------

ESCALATING = SlaPolicy(
    targets={"P1": 600},
    warn_at=[0.5],
    escalation=[
        EscalationStep(after_seconds=600, notify="team_lead"),
        EscalationStep(after_seconds=1800, notify="manager"),
    ],
)
BREACH = T0 + 10 * MIN


async def _breached(engine: AsyncEngine, reassign_after: float | None = None) -> Sessions:
    """A P1 case posted at T0 whose breach (T0+10 min) fired 7 s late."""
    sessions = await _sessions(engine, ESCALATING)
    await _team(sessions, reassign_after)
    await _post(sessions, scored(raw("1", T0)), T0)
    assert await fire_due(sessions, ["log"], now=BREACH + timedelta(seconds=7)) == 2
    return sessions


async def test_breach_freezes_the_escalation_chain(engine: AsyncEngine) -> None:
    sessions = await _breached(engine)
    case = await _case(sessions)
    steps = [s.model_dump() for s in ESCALATING.escalation]
    assert case.escalation is not None
    assert case.escalation["steps"] == steps
    assert (case.escalation["policy_id"], case.escalation["cycle"]) == (case.policy_id, 1)
    # Step 1 at breach + 10 min, step 2 30 min after step 1, counted from the breach's time.
    expected = {
        "warning:0.5": (T0 + 5 * MIN, "fired"),
        "breach": (BREACH, "fired"),
        "escalation:1": (BREACH + 10 * MIN, "pending"),
        "escalation:2": (BREACH + 40 * MIN, "pending"),
    }
    assert await _deadlines(sessions) == expected
    assert (await _cycle(sessions)).breached

    # A policy edit after the breach changes neither the frozen chain nor its deadlines.
    edited = ESCALATING.model_copy(
        update={"escalation": [EscalationStep(after_seconds=60, notify="team")]}
    )
    async with sessions() as s, s.begin():
        assert (await save_policy(s, edited, BREACH + MIN)).version == 2
    assert (await _case(sessions)).escalation == case.escalation
    assert await _deadlines(sessions) == expected

    assert await fire_due(sessions, ["log"], now=BREACH + 10 * MIN) == 1
    assert await fire_due(sessions, ["log"], now=BREACH + 40 * MIN) == 1
    async with sessions() as s:
        sent = {
            m.stage: m.payload.get("escalation", {}).get("target")
            for m in await s.scalars(select(OutboxMessage))
        }
    assert sent == {
        "warning:0.5": None,
        "breach": None,
        "escalation:1": "team_lead",
        "escalation:2": "manager",
    }


async def test_acknowledging_stops_escalation_not_the_clock(engine: AsyncEngine) -> None:
    sessions = await _breached(engine, reassign_after=3600)
    assert await fire_due(sessions, ["log"], now=BREACH + 10 * MIN) == 1  # escalation:1
    await _act(sessions, "c1", lambda s, c: actions.acknowledge(s, c, "ann", BREACH + 11 * MIN))
    assert await _deadlines(sessions) == {
        "warning:0.5": (T0 + 5 * MIN, "fired"),
        "breach": (BREACH, "fired"),
        "escalation:1": (BREACH + 10 * MIN, "fired"),
        "escalation:2": (BREACH + 40 * MIN, "cancelled"),
        "reassign": (T0 + 60 * MIN, "cancelled"),
    }
    assert await fire_due(sessions, ["log"], now=T0 + 3 * 60 * MIN) == 0
    case = await _case(sessions)
    assert case.status == "open" and case.acknowledged_at == BREACH + 11 * MIN


async def test_acknowledged_before_the_breach_no_chain_starts(engine: AsyncEngine) -> None:
    sessions = await _sessions(engine, ESCALATING)
    await _post(sessions, scored(raw("1", T0)), T0)
    await _act(sessions, "c1", lambda s, c: actions.acknowledge(s, c, "ann", T0 + MIN))
    # The SLA clock keeps running: both stages still fire; no escalation follows.
    assert await fire_due(sessions, ["log"], now=BREACH) == 2
    assert (await _case(sessions)).escalation is None
    assert set(await _deadlines(sessions)) == {"warning:0.5", "breach"}


async def test_answering_cancels_everything_pending(engine: AsyncEngine) -> None:
    sessions = await _breached(engine, reassign_after=3600)
    snooze_until = T0 + 120 * MIN
    await _act(sessions, "c1", lambda s, c: actions.snooze(s, c, "ann", BREACH + MIN, snooze_until))
    pending = {k for k, (_, st) in (await _deadlines(sessions)).items() if st == "pending"}
    assert pending == {"escalation:1", "escalation:2", "reassign", "snooze_end"}

    answer_at = BREACH + 5 * MIN
    assert await _post(sessions, scored(raw("2", answer_at, brand_post=True)), answer_at) == (
        "answered"
    )
    assert await _deadlines(sessions) == {
        "warning:0.5": (T0 + 5 * MIN, "fired"),
        "breach": (BREACH, "fired"),
        "escalation:1": (BREACH + 10 * MIN, "cancelled"),
        "escalation:2": (BREACH + 40 * MIN, "cancelled"),
        "reassign": (T0 + 60 * MIN, "cancelled"),
        "snooze_end": (snooze_until, "cancelled"),
    }
    assert await fire_due(sessions, ["log"], now=T0 + 5 * 60 * MIN) == 0
    case, cycle = await _case(sessions), await _cycle(sessions)
    assert case.status == "answered" and case.snoozed_until is None
    assert cycle.breached and cycle.response_seconds == 15 * 60


# --- visibility -------------------------------------------------------------------------


async def test_every_deadline_is_visible(engine: AsyncEngine) -> None:
    sessions = await _sessions(engine, SlaPolicy(targets={"P1": 600}, warn_at=[0.5]))
    await _team(sessions, reassign_after=3600)
    await _post(sessions, scored(raw("1", T0)), T0)
    assert await fire_due(sessions, ["log"], now=T0 + 5 * MIN) == 1  # the warning
    await _act(sessions, "c1", lambda s, c: actions.wait_on_customer(s, c, "ann", T0 + 6 * MIN))
    await _post(sessions, scored(raw("2", T0 + 8 * MIN)), T0 + 8 * MIN)  # resumes: +2 min
    await _act(sessions, "c1", lambda s, c: actions.acknowledge(s, c, "ann", T0 + 9 * MIN))

    case = await _case(sessions)
    async with sessions() as s:
        detail = await _detail(s, case.id)
    assert [(d.stage, d.due_at, d.status) for d in detail.deadlines] == [
        ("warning:0.5", T0 + 5 * MIN, "fired"),
        ("breach", T0 + 12 * MIN, "pending"),
        ("reassign", T0 + 60 * MIN, "cancelled"),
    ]
    assert detail.deadlines[0].fired_at == T0 + 5 * MIN
    assert detail.due_at == T0 + 12 * MIN and not detail.paused
    assert [e.kind for e in detail.timeline] == [
        "opened",
        "assigned",
        "alert",
        "waiting_on_customer",
        "customer_replied",
        "acknowledged",
    ]
