"""API tokens and the HTTP guard on SQLite and PostgreSQL, over a real server and the real CLI."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import httpx
import pytest
from fastapi import Depends, FastAPI
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from services.alert.access import (
    Principal,
    authenticate,
    create_token,
    list_tokens,
    require,
    revoke_token,
    role_allows,
)
from shared.db.engine import make_engine, make_sessionmaker
from shared.db.models import ApiToken
from tests.live_server import live_server

THIRDRING = str(Path(sys.executable).parent / "thirdring")
T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


async def _create(sessions: async_sessionmaker[AsyncSession], name: str, role: str) -> str:
    async with sessions() as s, s.begin():
        return await create_token(s, name, role)


async def _revoke(sessions: async_sessionmaker[AsyncSession], name: str) -> bool:
    async with sessions() as s, s.begin():
        return await revoke_token(s, name)


async def _auth(
    sessions: async_sessionmaker[AsyncSession], token: str, now: datetime | None = None
) -> ApiToken | None:
    async with sessions() as s, s.begin():
        return await authenticate(s, token, now)


async def test_create_authenticate_revoke_stores_only_the_hash(engine: AsyncEngine) -> None:
    sessions = make_sessionmaker(engine)
    token = await _create(sessions, "crm-sync", "agent")
    assert token.startswith("tr_") and len(token) >= 40

    async with sessions() as s:
        row = await s.scalar(select(ApiToken))
    assert row is not None
    assert row.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert row.prefix == token[:8]
    assert token not in {row.name, row.role, row.token_hash, row.prefix}
    assert row.last_used_at is None and row.revoked_at is None

    found = await _auth(sessions, token)
    assert found is not None and (found.name, found.role) == ("crm-sync", "agent")
    assert found.last_used_at is not None
    assert await _auth(sessions, token + "x") is None
    assert await _auth(sessions, "") is None

    assert await _revoke(sessions, "crm-sync") is True
    assert await _auth(sessions, token) is None
    assert await _revoke(sessions, "crm-sync") is False  # already revoked
    assert await _revoke(sessions, "nobody") is False


async def test_bad_role_and_duplicate_name_are_refused_but_revoked_names_come_back(
    engine: AsyncEngine,
) -> None:
    sessions = make_sessionmaker(engine)
    with pytest.raises(ValueError, match="unknown role 'boss'"):
        await _create(sessions, "x", "boss")
    old = await _create(sessions, "alice", "viewer")
    with pytest.raises(ValueError, match="already exists"):
        await _create(sessions, "alice", "admin")

    # The refused create did not spoil the caller's transaction (a savepoint).
    async with sessions() as s, s.begin():
        with pytest.raises(ValueError):
            await create_token(s, "alice", "admin")
        await create_token(s, "bob", "agent")
    assert [t.name for t in await _list(sessions)] == ["alice", "bob"]

    await _revoke(sessions, "alice")
    new = await _create(sessions, "alice", "admin")
    assert await _auth(sessions, old) is None  # the old token stays dead
    row = await _auth(sessions, new)
    assert row is not None and row.role == "admin"


async def _list(sessions: async_sessionmaker[AsyncSession]):  # type: ignore[no-untyped-def]
    async with sessions() as s:
        return await list_tokens(s)


async def test_list_shows_state_but_never_the_hash(engine: AsyncEngine) -> None:
    sessions = make_sessionmaker(engine)
    token = await _create(sessions, "b", "admin")
    await _create(sessions, "a", "viewer")
    await _revoke(sessions, "a")
    tokens = await _list(sessions)
    assert [(t.name, t.role, t.active) for t in tokens] == [
        ("a", "viewer", False),
        ("b", "admin", True),
    ]
    assert tokens[1].prefix == token[:8]
    assert not hasattr(tokens[0], "token_hash")


async def test_last_used_is_written_at_most_once_a_minute(engine: AsyncEngine) -> None:
    sessions = make_sessionmaker(engine)
    token = await _create(sessions, "t", "viewer")

    async def last_used() -> datetime | None:
        async with sessions() as s:
            return await s.scalar(select(ApiToken.last_used_at))

    await _auth(sessions, token, T0)
    assert await last_used() == T0
    await _auth(sessions, token, T0 + timedelta(seconds=59))
    assert await last_used() == T0
    await _auth(sessions, token, T0 + timedelta(seconds=61))
    assert await last_used() == T0 + timedelta(seconds=61)


def test_roles_are_ordered() -> None:
    order = ["viewer", "agent", "admin"]
    for i, held in enumerate(order):
        for j, needed in enumerate(order):
            assert role_allows(held, needed) is (i >= j), (held, needed)
    assert role_allows("root", "viewer") is False
    with pytest.raises(ValueError):
        role_allows("admin", "root")
    with pytest.raises(ValueError):
        require("root")


def _guarded_app(sessions: async_sessionmaker[AsyncSession]) -> FastAPI:
    app = FastAPI()
    app.state.sessions = sessions

    @app.get("/view")
    async def view(who: Annotated[Principal, Depends(require("viewer"))]) -> dict[str, str]:
        return {"name": who.name, "role": who.role}

    @app.post("/act")
    async def act(who: Annotated[Principal, Depends(require("agent"))]) -> dict[str, str]:
        return {"name": who.name, "role": who.role}

    @app.delete("/admin")
    async def admin(who: Annotated[Principal, Depends(require("admin"))]) -> dict[str, str]:
        return {"name": who.name, "role": who.role}

    return app


@pytest.fixture
async def guarded(engine: AsyncEngine) -> AsyncIterator[httpx.AsyncClient]:
    """The guarded app under a real uvicorn server on a free loopback port."""
    async with (
        live_server(_guarded_app(make_sessionmaker(engine))) as base,
        httpx.AsyncClient(base_url=base, timeout=10) as c,
    ):
        yield c


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_http_guard(guarded: httpx.AsyncClient, engine: AsyncEngine) -> None:
    sessions = make_sessionmaker(engine)
    viewer = await _create(sessions, "wallboard", "viewer")
    agent = await _create(sessions, "alice", "agent")
    admin = await _create(sessions, "ops", "admin")

    for headers in ({}, {"Authorization": f"Basic {agent}"}, {"X-Thirdring-Token": ""}):
        r = await guarded.get("/view", headers=headers)
        assert r.status_code == 401, headers
        assert r.json() == {"detail": "missing API token: send Authorization: Bearer <token>"}
        assert r.headers["www-authenticate"] == "Bearer"

    r = await guarded.get("/view", headers=bearer("tr_not-a-real-token"))
    assert r.status_code == 401 and r.json() == {"detail": "invalid or revoked API token"}
    assert r.headers["www-authenticate"] == "Bearer"

    r = await guarded.post("/act", headers=bearer(viewer))
    assert r.status_code == 403
    assert r.json() == {"detail": "this endpoint needs the agent role; token wallboard has viewer"}
    r = await guarded.delete("/admin", headers={"X-Thirdring-Token": agent})
    assert r.status_code == 403
    assert r.json() == {"detail": "this endpoint needs the admin role; token alice has agent"}

    # Both header styles; a stronger role passes a weaker guard.
    assert (await guarded.get("/view", headers=bearer(viewer))).json() == {
        "name": "wallboard",
        "role": "viewer",
    }
    r = await guarded.post("/act", headers={"X-Thirdring-Token": agent})
    assert r.status_code == 200 and r.json() == {"name": "alice", "role": "agent"}
    for path in ("/view", "/act", "/admin"):
        r = await guarded.request(
            {"/view": "GET", "/act": "POST", "/admin": "DELETE"}[path], path, headers=bearer(admin)
        )
        assert r.status_code == 200 and r.json()["name"] == "ops", path

    # The guard committed last_used_at.
    async with sessions() as s:
        used = await s.scalar(select(ApiToken.last_used_at).where(ApiToken.name == "ops"))
    assert used is not None

    await _revoke(sessions, "alice")
    r = await guarded.post("/act", headers=bearer(agent))
    assert r.status_code == 401 and r.json() == {"detail": "invalid or revoked API token"}


async def test_openapi_declares_both_schemes() -> None:
    """So /docs offers an Authorize button for either header."""
    engine = make_engine("sqlite+aiosqlite:///:memory:")  # never connected: no request needs it
    app = _guarded_app(make_sessionmaker(engine))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        schemes = (await c.get("/openapi.json")).json()["components"]["securitySchemes"]
    assert schemes["HTTPBearer"]["scheme"] == "bearer"
    assert schemes["APIKeyHeader"]["name"] == "X-Thirdring-Token"


def _cli(*args: str, db: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "THIRDRING_DATABASE_URL": f"sqlite+aiosqlite:///{db}"}
    return subprocess.run(
        [THIRDRING, "tokens", *args], capture_output=True, text=True, timeout=120, env=env
    )


async def test_cli_create_list_revoke(tmp_path: Path) -> None:
    db = tmp_path / "t.db"  # not migrated: the CLI migrates first
    created = await asyncio.to_thread(_cli, "create", "crm-sync", "--role", "agent", db=db)
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert token.startswith("tr_") and "\n" not in token
    assert "not be shown again" in created.stderr and token not in created.stderr

    engine = make_engine(f"sqlite+aiosqlite:///{db}")
    try:
        sessions = make_sessionmaker(engine)
        row = await _auth(sessions, token)
        assert row is not None and row.role == "agent"

        listed = await asyncio.to_thread(_cli, "list", db=db)
        assert listed.returncode == 0, listed.stderr
        assert "crm-sync" in listed.stdout and "agent" in listed.stdout
        assert token not in listed.stdout and row.token_hash not in listed.stdout

        dup = await asyncio.to_thread(_cli, "create", "crm-sync", "--role", "viewer", db=db)
        assert dup.returncode == 2 and dup.stdout == ""
        assert "already exists" in dup.stderr and len(dup.stderr.strip().splitlines()) == 1
        bad = await asyncio.to_thread(_cli, "create", "x", "--role", "boss", db=db)
        assert bad.returncode == 2 and "unknown role" in bad.stderr

        revoked = await asyncio.to_thread(_cli, "revoke", "crm-sync", db=db)
        assert revoked.returncode == 0, revoked.stderr
        assert await _auth(sessions, token) is None
        again = await asyncio.to_thread(_cli, "revoke", "crm-sync", db=db)
        assert again.returncode == 2 and "no active token" in again.stderr
    finally:
        await engine.dispose()
