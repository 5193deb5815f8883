"""Migrations run up, down and up again on both databases, and match the models."""

from __future__ import annotations

import asyncio

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db.migrate import alembic_config, pending
from shared.db.models import Base


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
