"""Migrations run up, down and up again on both databases, and match the models."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.alert.sla.calendars import Calendar
from services.alert.sla.policies import SlaPolicy
from services.alert.sla.store import save_policy
from shared.db.engine import make_sessionmaker
from shared.db.migrate import alembic_config, pending
from shared.db.models import Base, ResponseCycle
from tests.alert.stats_rows import case_row


async def test_downgrade_and_upgrade_again(db_url: str, engine: AsyncEngine) -> None:
    cfg = alembic_config(db_url)
    await asyncio.to_thread(command.downgrade, cfg, "base")
    assert await asyncio.to_thread(pending, db_url) is not None
    await asyncio.to_thread(command.upgrade, cfg, "head")
    assert await asyncio.to_thread(pending, db_url) is None
    async with engine.connect() as conn:
        diff = await conn.run_sync(
            lambda c: compare_metadata(MigrationContext.configure(c), Base.metadata)
        )
    assert diff == []  # the models and the migrated schema agree


async def test_0009_fills_the_business_response_time_of_answered_cycles(
    db_url: str, engine: AsyncEngine
) -> None:
    """Cycles answered before 0009 get the value ``answer()`` would have stored."""
    cfg = alembic_config(db_url)
    await asyncio.to_thread(command.downgrade, cfg, "0008")
    office = SlaPolicy(
        name="office",
        calendar=Calendar(
            name="office",
            timezone="UTC",
            windows={d: ["09:00-17:00"] for d in ("mon", "tue", "wed", "thu", "fri")},
        ),
        targets={"P2": 3600},
    )
    fri = datetime(2026, 11, 20, 16, 30, tzinfo=UTC)  # a Friday
    sat, mon = fri + timedelta(hours=18, minutes=30), fri + timedelta(hours=65)
    h = 3600.0
    # name: business hours?, has the policy?, start, answer, paused s, expected (None: unset)
    cycles = {
        "weekend": (True, True, fri, mon, 0.0, h),  # 16:30-17:00 Fri + 09:00-09:30 Mon
        "paused": (True, True, sat, mon + timedelta(minutes=40), 600.0, h),  # 70 min - 10
        "wall": (False, True, fri, mon, 600.0, 65 * h - 600),
        "no policy": (True, False, fri, mon, 0.0, 65 * h),
        "waiting": (True, True, fri, None, 0.0, None),
    }
    async with make_sessionmaker(engine)() as s, s.begin():
        policy = await save_policy(s, office, fri)
        for n, (name, (business, has_policy, start, answered, paused, _)) in enumerate(
            cycles.items()
        ):
            case = case_row(f"m-{n}", "twitter", "P2", start)
            case.policy_id = policy.id if has_policy else None
            s.add(case)
            await s.flush()
            # Core, not the model: the 0008 table has no business_response_seconds yet.
            await s.execute(
                insert(ResponseCycle.__table__).values(
                    case_id=case.id,
                    seq=1,
                    started_at=start,
                    started_event_id=name,
                    priority="P2",
                    target_seconds=h,
                    business_time=business,
                    paused_seconds=paused,
                    answered_at=answered,
                    response_seconds=None
                    if answered is None
                    else (answered - start).total_seconds(),
                )
            )
    await asyncio.to_thread(command.upgrade, cfg, "head")
    async with make_sessionmaker(engine)() as s:
        got = dict(
            (
                await s.execute(
                    select(ResponseCycle.started_event_id, ResponseCycle.business_response_seconds)
                )
            ).all()
        )
    assert got == pytest.approx({name: c[-1] for name, c in cycles.items()})
