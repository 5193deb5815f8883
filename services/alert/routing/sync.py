"""Make the teams, members and routing rules in the database match the alerting file.

Teams and members are upserted and deactivated, never deleted, because cases and their
timelines point at them; routing rules have no history and are replaced wholesale.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.alert.config import AlertingConfig, MemberSpec, RoutingRuleSpec, TeamSpec
from services.alert.sla.calendars import Calendar
from shared.db.locks import advisory_lock
from shared.db.models import RoutingRule, Team, TeamMember


def _team_values(calendar: Calendar | None, spec: TeamSpec) -> dict[str, Any]:
    return {
        # Inlined, so a team row is self-contained even if the calendar is renamed later.
        "calendar": calendar.model_dump(mode="json") if calendar is not None else None,
        "capacity": spec.capacity,
        "reassign_after_seconds": spec.reassign_after_seconds,
        "channels": {"names": list(spec.channels)},
        "active": True,
    }


def _apply(row: Team | TeamMember, values: dict[str, Any]) -> bool:
    """Set the changed attributes; whether anything changed."""
    changed = False
    for key, value in values.items():
        if getattr(row, key) != value:
            setattr(row, key, value)
            changed = True
    return changed


async def _sync_members(session: AsyncSession, team: Team, specs: list[MemberSpec]) -> None:
    rows = await session.scalars(select(TeamMember).where(TeamMember.team_id == team.id))
    existing = {m.handle: m for m in rows}
    for spec in specs:
        values = {
            "name": spec.name or spec.handle,
            "email": spec.email,
            "role": spec.role,
            "active": True,
        }
        member = existing.pop(spec.handle, None)
        if member is None:
            session.add(TeamMember(team_id=team.id, handle=spec.handle, **values))
        else:
            _apply(member, values)
    for member in existing.values():
        member.active = False


async def sync_teams_and_rules(
    session: AsyncSession, config: AlertingConfig, now: datetime
) -> None:
    """Upsert teams and members, deactivate the missing ones, replace the routing rules."""
    # Replicas starting together would otherwise race on the unique team names.
    await advisory_lock(session, "thirdring:routing-sync")
    existing = {t.name: t for t in await session.scalars(select(Team))}
    by_name: dict[str, Team] = {}
    for spec in config.teams:
        team = existing.pop(spec.name, None)
        by_name[spec.name] = await _upsert(session, team, spec, config.calendar(spec.calendar), now)
    for team in existing.values():
        if team.active:
            team.active = False
            team.updated_at = now
    await _replace_rules(session, config.routing, by_name)


async def _upsert(
    session: AsyncSession,
    team: Team | None,
    spec: TeamSpec,
    calendar: Calendar | None,
    now: datetime,
) -> Team:
    values = _team_values(calendar, spec)
    if team is None:
        team = Team(name=spec.name, updated_at=now, **values)
        session.add(team)
        await session.flush()  # members and rules need its id
    elif _apply(team, values):
        team.updated_at = now
    await _sync_members(session, team, spec.members)
    return team


async def _replace_rules(
    session: AsyncSession, rules: list[RoutingRuleSpec], teams: dict[str, Team]
) -> None:
    await session.execute(delete(RoutingRule))
    for position, rule in enumerate(rules):
        session.add(
            RoutingRule(
                position=position,
                name=rule.name,
                conditions=rule.when.model_dump(),
                team_id=teams[rule.team].id,
            )
        )
    await session.flush()


async def put_team(session: AsyncSession, spec: TeamSpec, now: datetime) -> Team:
    """Create or replace one team (admin API). Its calendar must be inline, not a name."""
    if isinstance(spec.calendar, str):
        raise ValueError("calendar must be given inline (timezone, windows), not by name")
    await advisory_lock(session, "thirdring:routing-sync")
    team = await session.scalar(select(Team).where(Team.name == spec.name))
    return await _upsert(session, team, spec, spec.calendar, now)


async def put_rules(session: AsyncSession, rules: list[RoutingRuleSpec]) -> None:
    """Replace the routing rules (admin API); every rule must name an active team."""
    await advisory_lock(session, "thirdring:routing-sync")
    teams = {t.name: t for t in await session.scalars(select(Team).where(Team.active))}
    unknown = sorted({r.team for r in rules} - set(teams))
    if unknown:
        raise ValueError(f"unknown or inactive teams: {', '.join(unknown)}")
    await _replace_rules(session, rules, teams)
