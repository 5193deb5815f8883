"""Admin API: SLA policies (versioned), teams and routing rules. Needs the admin role.

A policy edit stores a new version; open cases keep the version they started with. Note that
a configured alerting file is re-applied at start (it is the source of truth when given).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel
from sqlalchemy import select

from services.alert.access import Principal, require
from services.alert.config import RoutingRuleSpec, TeamSpec
from services.alert.routing.sync import put_rules, put_team
from services.alert.sla.policies import SlaPolicy
from services.alert.sla.store import save_policy
from shared.db.models import RoutingRule, SlaPolicyVersion, Team, TeamMember
from shared.events import utcnow

router = APIRouter(prefix="/api/v1/admin", tags=["admin"])
Admin = Annotated[Principal, Depends(require("admin"))]


class PolicyVersionView(BaseModel):
    id: int
    name: str
    version: int
    active: bool
    position: int
    created_at: datetime
    spec: dict[str, Any]


class TeamView(BaseModel):
    name: str
    active: bool
    capacity: int | None
    reassign_after_seconds: float | None
    channels: list[str]
    members: list[dict[str, Any]]


def _view(row: SlaPolicyVersion) -> PolicyVersionView:
    return PolicyVersionView(
        id=row.id,
        name=row.name,
        version=row.version,
        active=row.active,
        position=row.position,
        created_at=row.created_at,
        spec=row.spec,
    )


@router.get("/policies")
async def list_policies(
    request: Request, _: Admin, all_versions: bool = False
) -> list[PolicyVersionView]:
    stmt = select(SlaPolicyVersion).order_by(SlaPolicyVersion.position, SlaPolicyVersion.version)
    if not all_versions:
        stmt = stmt.where(SlaPolicyVersion.active.is_(True))
    async with request.app.state.sessions() as session:
        return [_view(r) for r in await session.scalars(stmt)]


@router.put("/policies/{name}")
async def put_policy(
    request: Request, name: str, policy: SlaPolicy, who: Admin
) -> PolicyVersionView:
    """Create or edit a policy: a new active version (unchanged specs keep their version)."""
    if policy.name != name:
        raise HTTPException(422, detail=f"body name {policy.name!r} does not match path {name!r}")
    async with request.app.state.sessions() as session, session.begin():
        row = await save_policy(session, policy, utcnow())
        return _view(row)


@router.get("/teams")
async def list_teams(request: Request, _: Admin) -> list[TeamView]:
    async with request.app.state.sessions() as session:
        teams = list(await session.scalars(select(Team).order_by(Team.name)))
        out = []
        for t in teams:
            members = await session.scalars(
                select(TeamMember).where(TeamMember.team_id == t.id).order_by(TeamMember.id)
            )
            out.append(
                TeamView(
                    name=t.name,
                    active=t.active,
                    capacity=t.capacity,
                    reassign_after_seconds=t.reassign_after_seconds,
                    channels=(t.channels or {}).get("names", []),
                    members=[
                        {"handle": m.handle, "name": m.name, "role": m.role, "active": m.active}
                        for m in members
                    ],
                )
            )
        return out


@router.put("/teams/{name}")
async def put_team_route(request: Request, name: str, spec: TeamSpec, _: Admin) -> TeamView:
    """Create or replace a team and its members (members left out are deactivated)."""
    if spec.name != name:
        raise HTTPException(422, detail=f"body name {spec.name!r} does not match path {name!r}")
    try:
        async with request.app.state.sessions() as session, session.begin():
            await put_team(session, spec, utcnow())
    except ValueError as exc:
        raise HTTPException(422, detail=str(exc)) from None
    return next(t for t in await list_teams(request, _) if t.name == name)


class RuleView(BaseModel):
    name: str
    team: str
    when: dict[str, Any]


@router.get("/routing")
async def get_routing(request: Request, _: Admin) -> list[RuleView]:
    async with request.app.state.sessions() as session:
        rows = await session.execute(
            select(RoutingRule, Team).join(Team).order_by(RoutingRule.position)
        )
        return [RuleView(name=r.name, team=t.name, when=r.conditions) for r, t in rows]


@router.put("/routing")
async def put_routing(request: Request, rules: list[RoutingRuleSpec], _: Admin) -> list[RuleView]:
    """Replace the routing rules, in order (the first match wins)."""
    try:
        async with request.app.state.sessions() as session, session.begin():
            await put_rules(session, rules)
    except ValueError as exc:
        raise HTTPException(422, detail=str(exc)) from None
    return await get_routing(request, _)
