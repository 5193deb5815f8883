"""Schema migrations (Alembic), callable from the CLI and from tests."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the database at ``url`` to ``revision``. Safe to run repeatedly."""
    command.upgrade(alembic_config(url), revision)


async def upgrade_async(url: str, revision: str = "head") -> None:
    # env.py runs its own event loop, so it needs a thread of its own here.
    await asyncio.to_thread(upgrade, url, revision)


def pending(url: str) -> str | None:
    """None when the schema is current, else a message saying what to run."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from sqlalchemy import create_engine

    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    sync_url = url.replace("+aiosqlite", "").replace("+asyncpg", "+psycopg")
    if "+psycopg" in sync_url:
        # No sync PostgreSQL driver is installed; ask through the async one.
        return asyncio.run(_pending_async(url, head))
    engine = create_engine(sync_url)
    try:
        with engine.connect() as conn:
            current = MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()
    return _message(current, head)


async def _pending_async(url: str, head: str | None) -> str | None:
    from alembic.runtime.migration import MigrationContext

    from shared.db.engine import make_engine

    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            current = await conn.run_sync(
                lambda c: MigrationContext.configure(c).get_current_revision()
            )
    finally:
        await engine.dispose()
    return _message(current, head)


def _message(current: str | None, head: str | None) -> str | None:
    if current == head:
        return None
    return f"database schema is at {current or 'nothing'}, needs {head}: run `thirdring db upgrade`"
