"""Routing, assignment and incidents on SQLite and PostgreSQL (real databases)."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from services.alert.cases.timeline import timeline
from services.alert.config import AlertingConfig, IncidentSettings
from services.alert.routing.assignment import (
    assign,
    assign_queued,
    on_duty,
    reassign_if_idle,
    reassign_to,
)
from services.alert.routing.incidents import close_quiet_incidents, link_incident
from services.alert.routing.rules import route
from services.alert.routing.sync import sync_teams_and_rules
from services.alert.sla.policies import Facts
from shared.db.engine import make_sessionmaker
from shared.db.models import Case, Deadline, Incident, ResponseCycle, RoutingRule, Team, TeamMember

T0 = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)  # a Monday, inside the office hours below
OFFICE = {"name": "office", "timezone": "UTC", "windows": {"mon": ["09:00-17:00"]}}


def _config(teams: list[dict[str, Any]], routing: list[dict[str, Any]] = ()) -> AlertingConfig:
    return AlertingConfig.model_validate(
        {"calendars": {"office": OFFICE}, "teams": teams, "routing": list(routing)}
    )


def _team(name: str, *handles: str, **extra: Any) -> dict[str, Any]:
    """A team spec; a handle "x:lead" gives the member that role."""
    members = []
    for h in handles:
        handle, _, role = h.partition(":")
        members.append({"handle": handle, "role": role or "agent"})
    return {"name": name, "members": members, **extra}


async def _sync(s: AsyncSession, *teams: dict[str, Any]) -> dict[str, Team]:
    await sync_teams_and_rules(s, _config(list(teams)), T0)
    return {t.name: t for t in await s.scalars(select(Team))}


async def _case(
    s: AsyncSession, *, brand: str = "acme", intents: tuple[str, ...] = (), at: datetime = T0
) -> Case:
    """An open case with its first response cycle, as the case service would create it."""
    case = Case(
        conversation_id=f"c-{uuid.uuid4().hex}",
        brand=brand,
        source="test",
        status="open",
        priority="P2",
        opened_at=at,
        cycles=1,
        created_at=at,
        updated_at=at,
        intents={"intents": list(intents)},
    )
    s.add(case)
    await s.flush()
    s.add(
        ResponseCycle(
            case_id=case.id,
            seq=1,
            started_at=at,
            started_event_id="e",
            priority="P2",
            due_at=None,
            breached=False,
        )
    )
    await s.flush()
    return case


async def _kinds(s: AsyncSession, case: Case) -> list[tuple[str, dict[str, Any]]]:
    return [(e.kind, e.data) for e in await timeline(s, case.id)]


async def test_sync_creates_updates_and_deactivates(engine: AsyncEngine) -> None:
    first = _config(
        [
            _team("care", "ann", "bob:lead", calendar="office", capacity=2, channels=["log"]),
            _team("billing", "cat", reassign_after_seconds=300),
        ],
        [
            {"name": "money", "when": {"intent": ["refund"]}, "team": "billing"},
            {"name": "rest", "team": "care"},
        ],
    )
    second = _config(
        [_team("care", "ann", "dan", capacity=5)],
        [{"name": "all", "when": {"brand": ["acme"]}, "team": "care"}],
    )
    sessions = make_sessionmaker(engine)
    async with sessions() as s, s.begin():
        await sync_teams_and_rules(s, first, T0)
    async with sessions() as s:
        teams = {t.name: t for t in await s.scalars(select(Team))}
        care, billing = teams["care"], teams["billing"]
        assert care.calendar == OFFICE | {"holidays": []} and care.capacity == 2
        assert care.channels == {"names": ["log"]} and care.active
        assert billing.reassign_after_seconds == 300 and billing.calendar is None
        members = {m.handle: m for m in await s.scalars(select(TeamMember))}
        assert members["bob"].role == "lead" and members["bob"].team_id == care.id
        rules = list(await s.scalars(select(RoutingRule).order_by(RoutingRule.position)))
        assert [(r.position, r.name, r.team_id) for r in rules] == [
            (0, "money", billing.id),
            (1, "rest", care.id),
        ]
        assert rules[0].conditions["intent"] == ["refund"]

    later = T0 + timedelta(hours=1)
    async with sessions() as s, s.begin():
        await sync_teams_and_rules(s, second, later)
    async with sessions() as s:
        teams = {t.name: t for t in await s.scalars(select(Team))}
        assert teams["care"].id == care.id  # updated in place: cases keep pointing at it
        assert teams["care"].capacity == 5 and teams["care"].calendar is None
        assert teams["care"].updated_at == later
        assert not teams["billing"].active  # deactivated, not deleted
        members = {m.handle: m.active for m in await s.scalars(select(TeamMember))}
        assert members == {"ann": True, "bob": False, "cat": True, "dan": True}
        rules = list(await s.scalars(select(RoutingRule)))
        assert [(r.position, r.name) for r in rules] == [(0, "all")]

    async with sessions() as s, s.begin():  # coming back reactivates
        await sync_teams_and_rules(s, first, later)
    async with sessions() as s:
        teams = {t.name: t for t in await s.scalars(select(Team))}
        assert teams["billing"].active and teams["billing"].id == billing.id
        bob = await s.scalar(select(TeamMember).where(TeamMember.handle == "bob"))
        assert bob.active


async def test_route_picks_first_matching_rule_of_an_active_team(engine: AsyncEngine) -> None:
    config = _config(
        [_team("dach"), _team("ops"), _team("urgent"), _team("general")],
        [
            {"name": "german", "when": {"language": ["de"]}, "team": "dach"},
            {"name": "outage", "when": {"brand": ["acme"], "intent": ["outage"]}, "team": "ops"},
            {"name": "p1", "when": {"priority": ["P1"]}, "team": "urgent"},
            {"name": "rest", "team": "general"},
        ],
    )

    def facts(**kw: Any) -> Facts:
        return Facts(**({"source": "x", "brand": "acme", "language": "en", "priority": "P3"} | kw))

    async with make_sessionmaker(engine)() as s, s.begin():
        await sync_teams_and_rules(s, config, T0)

        async def team_for(**kw: Any) -> str | None:
            team = await route(s, facts(**kw))
            return team.name if team else None

        assert await team_for(language="de", intents=["outage"], priority="P1") == "dach"
        assert await team_for(intents=["outage", "refund"], priority="P1") == "ops"
        assert await team_for(brand="other", intents=["outage"], priority="P1") == "urgent"
        assert await team_for() == "general"
        dach = await s.scalar(select(Team).where(Team.name == "dach"))
        dach.active = False
        assert await team_for(language="de", priority="P1") == "urgent"
        await s.execute(RoutingRule.__table__.delete().where(RoutingRule.name == "rest"))
        assert await team_for() is None


async def test_round_robin_rotates_evenly(engine: AsyncEngine) -> None:
    async with make_sessionmaker(engine)() as s, s.begin():
        team = (await _sync(s, _team("care", "ann", "bob", "cat")))["care"]
        picked = []
        for i in range(6):
            now = T0 + timedelta(seconds=i)
            case = await _case(s, at=now)
            member = await assign(s, case, team, now)
            assert case.assignee_id == member.id and case.team_id == team.id
            assert case.assigned_at == now and member.last_assigned_at == now
            picked.append(member.handle)
        assert picked == ["ann", "bob", "cat", "ann", "bob", "cat"]
        assert await _kinds(s, case) == [("assigned", {"member": "cat", "team": "care"})]
        # No reassign_after_seconds: no reassign timer.
        assert await s.scalar(select(Deadline)) is None


async def test_capacity_cap_skips_a_full_member(engine: AsyncEngine) -> None:
    async with make_sessionmaker(engine)() as s, s.begin():
        team = (await _sync(s, _team("care", "ann", "bob", capacity=1)))["care"]
        first = await _case(s)
        assert (await assign(s, first, team, T0)).handle == "ann"
        second = await _case(s)
        assert (await assign(s, second, team, T0 + timedelta(seconds=1))).handle == "bob"
        third = await _case(s)
        assert await assign(s, third, team, T0 + timedelta(seconds=2)) is None
        assert third.team_id == team.id and third.assignee_id is None
        assert await _kinds(s, third) == [
            ("queued", {"team": "care", "reason": "no member available"})
        ]
        first.status = "answered"  # ann is free again, though bob is "due" too: bob is full
        bob = await s.scalar(select(TeamMember).where(TeamMember.handle == "bob"))
        bob.last_assigned_at = T0 - timedelta(hours=1)
        fourth = await _case(s)
        assert (await assign(s, fourth, team, T0 + timedelta(seconds=3))).handle == "ann"


async def test_off_hours_team_queues_the_case(engine: AsyncEngine) -> None:
    async with make_sessionmaker(engine)() as s, s.begin():
        team = (await _sync(s, _team("care", "ann", calendar="office")))["care"]
        evening = datetime(2026, 11, 2, 18, 0, tzinfo=UTC)
        case = await _case(s, at=evening)
        assert await on_duty(s, team, evening) == []
        assert await assign(s, case, team, evening) is None
        assert case.team_id == team.id and case.assignee_id is None
        assert await _kinds(s, case) == [
            ("queued", {"team": "care", "reason": "outside working hours"})
        ]
        assert [m.handle for m in await on_duty(s, team, T0)] == ["ann"]


async def test_queued_case_is_assigned_when_the_team_comes_on_duty(engine: AsyncEngine) -> None:
    async with make_sessionmaker(engine)() as s, s.begin():
        team = (await _sync(s, _team("care", "ann", calendar="office")))["care"]
        evening = datetime(2026, 11, 2, 18, 0, tzinfo=UTC)
        case = await _case(s, at=evening)
        await assign(s, case, team, evening)
        assert await assign_queued(s, evening + timedelta(hours=1)) == 0  # still closed
        morning = datetime(2026, 11, 9, 9, 30, tzinfo=UTC)  # next Monday
        assert await assign_queued(s, morning) == 1
        assert case.assignee_id is not None and case.assigned_at == morning


async def test_lead_is_on_duty_manager_is_not(engine: AsyncEngine) -> None:
    async with make_sessionmaker(engine)() as s, s.begin():
        team = (await _sync(s, _team("care", "lee:lead", "max:manager")))["care"]
        assert [m.handle for m in await on_duty(s, team, T0)] == ["lee"]
        case = await _case(s)
        assert (await assign(s, case, team, T0)).handle == "lee"


async def test_reassign_deadline_and_idle_reassignment(engine: AsyncEngine) -> None:
    async with make_sessionmaker(engine)() as s, s.begin():
        team = (await _sync(s, _team("care", "ann", "bob", reassign_after_seconds=300)))["care"]
        idle = await _case(s)
        assert (await assign(s, idle, team, T0)).handle == "ann"
        cycle_id = await s.scalar(select(ResponseCycle.id).where(ResponseCycle.case_id == idle.id))
        deadline = await s.scalar(select(Deadline).where(Deadline.case_id == idle.id))
        assert (deadline.stage, deadline.status, deadline.fraction) == ("reassign", "pending", None)
        assert deadline.due_at == T0 + timedelta(seconds=300) and deadline.cycle_id == cycle_id

        claimed = await _case(s)
        assert (await assign(s, claimed, team, T0 + timedelta(seconds=1))).handle == "bob"
        claimed.claimed_at = T0 + timedelta(seconds=60)

        fire = T0 + timedelta(seconds=300)
        moved = await reassign_if_idle(s, idle, fire)
        assert moved is not None and moved.handle == "bob" and idle.assignee_id == moved.id
        assert (await _kinds(s, idle))[-1] == (
            "reassigned",
            {"from": "ann", "to": "bob", "reason": "no action within 300 s"},
        )
        # The one timer of the cycle moved on, for the new assignee.
        deadlines = list(await s.scalars(select(Deadline).where(Deadline.case_id == idle.id)))
        assert [(d.status, d.due_at) for d in deadlines] == [
            ("pending", fire + timedelta(seconds=300))
        ]

        bob_id = claimed.assignee_id
        assert await reassign_if_idle(s, claimed, fire + timedelta(seconds=1)) is None
        assert claimed.assignee_id == bob_id


async def test_reassign_to(engine: AsyncEngine) -> None:
    async with make_sessionmaker(engine)() as s, s.begin():
        teams = await _sync(s, _team("care", "ann", "bob"), _team("vip", "zoe"))
        case = await _case(s)
        await assign(s, case, teams["care"], T0)
        with pytest.raises(ValueError, match="no active member 'nobody' in team 'care'"):
            await reassign_to(s, case, "nobody", T0, actor="alice")
        with pytest.raises(ValueError, match="'zoe'"):  # another team's member
            await reassign_to(s, case, "zoe", T0, actor="alice")
        bob = await reassign_to(s, case, "bob", T0 + timedelta(seconds=5), actor="alice")
        assert case.assignee_id == bob.id
        events = await timeline(s, case.id)
        assert (events[-1].kind, events[-1].actor, events[-1].data) == (
            "reassigned",
            "alice",
            {"from": "ann", "to": "bob", "reason": "manual"},
        )

        loose = await _case(s)  # no team yet: any team's member, and the case follows
        zoe = await reassign_to(s, loose, "zoe", T0, actor="alice")
        assert loose.team_id == teams["vip"].id and loose.assignee_id == zoe.id


async def test_incident_forms_at_threshold_and_collects_later_cases(engine: AsyncEngine) -> None:
    settings = IncidentSettings(window_seconds=600, threshold=3)

    def facts(*intents: str) -> Facts:
        return Facts(source="x", brand="acme", language="en", priority="P2", intents=list(intents))

    async with make_sessionmaker(engine)() as s, s.begin():
        cases, links = [], []
        for i, intents in enumerate([("outage",), ("outage",), ("refund", "outage")]):
            now = T0 + timedelta(seconds=60 * i)
            case = await _case(s, intents=intents, at=now)
            cases.append(case)
            links.append(await link_incident(s, case, facts(*intents), settings, now))
        assert links[:2] == [None, None]
        incident = links[2]
        assert incident is not None and incident.signature == "intent:outage"
        assert incident.case_count == 3 and incident.status == "open"
        assert {c.incident_id for c in cases} == {incident.id}
        for c in cases:
            assert (await _kinds(s, c))[-1][0] == "incident_linked"

        now = T0 + timedelta(seconds=400)
        fourth = await _case(s, intents=("outage",), at=now)
        assert await link_incident(s, fourth, facts("outage"), settings, now) is incident
        assert incident.case_count == 4 and incident.last_seen_at == now

        refund = await _case(s, intents=("refund",), at=now)
        other_brand = await _case(s, brand="globex", intents=("outage",), at=now)
        assert await link_incident(s, refund, facts("refund"), settings, now) is None
        globex = Facts(source="x", brand="globex", language="en", priority="P2", intents=["outage"])
        assert await link_incident(s, other_brand, globex, settings, now) is None
        assert refund.incident_id is None and other_brand.incident_id is None
        assert len(list(await s.scalars(select(Incident)))) == 1

        assert await close_quiet_incidents(s, now + timedelta(seconds=599), settings) == 0
        assert await close_quiet_incidents(s, now + timedelta(seconds=601), settings) == 1
        assert incident.status == "closed"


async def test_repeated_contact_is_no_cause_for_an_incident(engine: AsyncEngine) -> None:
    """Customers who each say "third time I ask" share no cause; a real cause still groups."""
    settings = IncidentSettings(window_seconds=600, threshold=2)

    def facts(*intents: str) -> Facts:
        return Facts(source="x", brand="acme", language="en", priority="P2", intents=list(intents))

    async with make_sessionmaker(engine)() as s, s.begin():
        for i in range(3):
            case = await _case(s, intents=("repeat",), at=T0 + timedelta(seconds=i))
            assert await link_incident(s, case, facts("repeat"), settings, T0) is None
        first = await _case(s, intents=("repeat", "outage"), at=T0)
        assert await link_incident(s, first, facts("repeat", "outage"), settings, T0) is None
        second = await _case(s, intents=("outage", "repeat"), at=T0)
        incident = await link_incident(s, second, facts("outage", "repeat"), settings, T0)
        assert incident is not None and incident.signature == "intent:outage"
        assert incident.case_count == 2
        assert len(list(await s.scalars(select(Incident)))) == 1


async def test_replicas_respect_the_capacity_cap(engine: AsyncEngine) -> None:
    """Two concurrent assignments to a team with one free slot: exactly one gets it."""
    sessions = make_sessionmaker(engine)
    async with sessions() as s, s.begin():
        team_id = (await _sync(s, _team("care", "ann", capacity=1)))["care"].id
        case_ids = [(await _case(s)).id for _ in range(2)]

    async def one(case_id: int) -> str | None:
        async with sessions() as s, s.begin():
            team = await s.get(Team, team_id)
            case = await s.get(Case, case_id)
            member = await assign(s, case, team, T0)
            await asyncio.sleep(0.05)  # hold the lock while the other replica tries
            return member.handle if member else None

    results = await asyncio.gather(*(one(c) for c in case_ids))
    assert Counter(results) == Counter({"ann": 1, None: 1})


async def test_idle_case_stays_when_nobody_else_is_on_duty(engine: AsyncEngine) -> None:
    async with make_sessionmaker(engine)() as s, s.begin():
        team = (await _sync(s, _team("care", "ann", reassign_after_seconds=60)))["care"]
        case = await _case(s)
        ann = await assign(s, case, team, T0)
        assert await reassign_if_idle(s, case, T0 + timedelta(seconds=60)) is None
        assert case.assignee_id == ann.id
        assert (await _kinds(s, case))[-1] == (
            "reassign_skipped",
            {"reason": "nobody else on duty"},
        )
