"""Stored policy versions: sync from the configuration, look up the active ones.

A version is immutable once written, so lookups by id are cached for the process.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.alert.sla.policies import SlaPolicy
from shared.db.locks import advisory_lock
from shared.db.models import SlaPolicyVersion


def _spec(policy: SlaPolicy) -> dict:
    return policy.model_dump(mode="json")


async def save_policy(
    session: AsyncSession, policy: SlaPolicy, now: datetime, position: int | None = None
) -> SlaPolicyVersion:
    """Store ``policy`` as its name's new active version, unless it equals the active one."""
    # Replicas starting together (or two admin edits) would otherwise both read the same
    # last version and insert the same (name, version): one of them dies on the unique key.
    await advisory_lock(session, "thirdring:policy-versions")
    active = await session.scalar(
        select(SlaPolicyVersion).where(
            SlaPolicyVersion.name == policy.name, SlaPolicyVersion.active.is_(True)
        )
    )
    if position is None:
        position = active.position if active else await _next_position(session)
    if active is not None and active.spec == _spec(policy):
        active.position = position
        return active
    last = await session.scalar(
        select(func.max(SlaPolicyVersion.version)).where(SlaPolicyVersion.name == policy.name)
    )
    if active is not None:
        active.active = False
    row = SlaPolicyVersion(
        name=policy.name,
        version=(last or 0) + 1,
        active=True,
        position=position,
        spec=_spec(policy),
        created_at=now,
    )
    session.add(row)
    await session.flush()
    return row


async def _next_position(session: AsyncSession) -> int:
    top = await session.scalar(
        select(func.max(SlaPolicyVersion.position)).where(SlaPolicyVersion.active.is_(True))
    )
    return 0 if top is None else top + 1


async def sync_policies(session: AsyncSession, policies: list[SlaPolicy], now: datetime) -> None:
    """Make the active policies those of the configuration, in its order."""
    names = [p.name for p in policies]
    for position, policy in enumerate(policies):
        await save_policy(session, policy, now, position)
    await session.execute(
        update(SlaPolicyVersion)
        .where(SlaPolicyVersion.active.is_(True), SlaPolicyVersion.name.not_in(names))
        .values(active=False)
    )


async def active_policies(session: AsyncSession) -> list[tuple[int, SlaPolicy]]:
    rows = await session.scalars(
        select(SlaPolicyVersion)
        .where(SlaPolicyVersion.active.is_(True))
        .order_by(SlaPolicyVersion.position, SlaPolicyVersion.id)
    )
    return [(r.id, _parse(session, r.id, r.spec)) for r in rows]


async def policy_by_id(session: AsyncSession, policy_id: int) -> SlaPolicy:
    cached = _CACHE.get(_key(session, policy_id))
    if cached is not None:
        return cached
    row = await session.get(SlaPolicyVersion, policy_id)
    if row is None:
        raise LookupError(f"policy version {policy_id} does not exist")
    return _parse(session, row.id, row.spec)


# Versions never change, so parsed specs are cached by (database, id) for the process.
_CACHE: dict[tuple[str, int], SlaPolicy] = {}


def _key(session: AsyncSession, policy_id: int) -> tuple[str, int]:
    return (str(session.get_bind().url), policy_id)


def _parse(session: AsyncSession, policy_id: int, spec: dict) -> SlaPolicy:
    key = _key(session, policy_id)
    policy = _CACHE.get(key)
    if policy is None:
        policy = _CACHE[key] = SlaPolicy.model_validate(spec)
    return policy
