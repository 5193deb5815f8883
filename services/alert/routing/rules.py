"""Pick the team for a case: the first routing rule that matches, like SLA policies."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.alert.sla.policies import Conditions, Facts
from shared.db.models import RoutingRule, Team


async def route(session: AsyncSession, facts: Facts) -> Team | None:
    """The team of the first rule (by position) that matches ``facts``; None = unrouted.

    Rules of deactivated teams are skipped, so a team removed from the file stops
    receiving cases even before its rules are re-synced.
    """
    rows = await session.execute(
        select(RoutingRule, Team)
        .join(Team, RoutingRule.team_id == Team.id)
        .where(Team.active.is_(True))
        .order_by(RoutingRule.position, RoutingRule.id)
    )
    for rule, team in rows:
        if Conditions.model_validate(rule.conditions).matches(facts):
            return team
    return None
