"""UTCDateTime: the same instant, tz-aware in UTC, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import StatementError
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db.engine import make_sessionmaker
from shared.db.models import IngestedEvent

IST = timezone(timedelta(hours=5, minutes=30))
PDT = timezone(timedelta(hours=-7))


async def test_offset_datetime_reads_back_as_same_instant_in_utc(engine: AsyncEngine) -> None:
    written = datetime(2026, 11, 27, 15, 30, 45, 123456, tzinfo=IST)
    sessions = make_sessionmaker(engine)
    async with sessions() as session, session.begin():
        session.add(IngestedEvent(event_id="e-ist", source="test", first_seen_at=written))

    # A new session, so the value comes from the database and not the identity map.
    async with sessions() as session:
        got = await session.scalar(
            select(IngestedEvent.first_seen_at).where(IngestedEvent.event_id == "e-ist")
        )
    assert got is not None
    assert got == written
    assert got.tzinfo is not None and got.utcoffset() == timedelta(0)
    assert got == datetime(2026, 11, 27, 10, 0, 45, 123456, tzinfo=UTC)
    assert (got.hour, got.minute) == (10, 0)  # wall clock is UTC, not the writer's


async def test_filters_and_order_compare_instants(engine: AsyncEngine) -> None:
    # Local wall-clock order is the reverse of the real order of these instants.
    early = datetime(2026, 1, 1, 20, 0, tzinfo=IST)  # 14:30 UTC
    late = datetime(2026, 1, 1, 8, 0, tzinfo=PDT)  # 15:00 UTC
    sessions = make_sessionmaker(engine)
    async with sessions() as session, session.begin():
        session.add_all(
            [
                IngestedEvent(event_id="late", source="test", first_seen_at=late),
                IngestedEvent(event_id="early", source="test", first_seen_at=early),
            ]
        )
    async with sessions() as session:
        order = (
            await session.scalars(
                select(IngestedEvent.event_id).order_by(IngestedEvent.first_seen_at)
            )
        ).all()
        # The same instant given in another zone finds the row.
        match = await session.scalar(
            select(IngestedEvent.event_id).where(
                IngestedEvent.first_seen_at == early.astimezone(PDT)
            )
        )
        after = await session.scalar(
            select(func.count()).where(
                IngestedEvent.first_seen_at > datetime(2026, 1, 1, 14, 45, tzinfo=UTC)
            )
        )
    assert list(order) == ["early", "late"]
    assert match == "early"
    assert after == 1


async def test_naive_datetime_is_refused(engine: AsyncEngine) -> None:
    sessions = make_sessionmaker(engine)
    with pytest.raises(StatementError, match="naive datetime"):
        async with sessions() as session, session.begin():
            session.add(
                IngestedEvent(event_id="naive", source="test", first_seen_at=datetime(2026, 1, 1))
            )
    async with sessions() as session:
        assert await session.scalar(select(func.count()).select_from(IngestedEvent)) == 0
