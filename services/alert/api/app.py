"""The alert service's HTTP API: health, cases for the front line, stats for managers.

Routers stay thin; the logic lives in cases/ and stats/.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Query
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.alert.access import Principal, require
from services.alert.api import admin, cases
from services.alert.stats.service import ResponseTimeStats, response_times
from shared.events import utcnow

MAX_RANGE = timedelta(days=366)


def create_api_app(
    sessions: async_sessionmaker[AsyncSession],
    ready: Callable[[], Awaitable[bool]] | None = None,
) -> FastAPI:
    app = FastAPI(
        title="thirdring alert API",
        version="0.1.0",
        description=(
            "Cases, SLA policies and response-time statistics. Answer before the third ring. "
            "Every endpoint but health needs an API token (`thirdring tokens create`)."
        ),
    )
    app.state.sessions = sessions  # read by the token guard and the routers
    app.include_router(cases.router)
    app.include_router(admin.router)

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    async def readyz() -> JSONResponse:
        checks: dict[str, bool] = {}
        try:
            async with sessions() as session:
                await session.execute(text("select 1"))
            checks["database"] = True
        except Exception:
            checks["database"] = False
        checks["consumer"] = await ready() if ready else True
        ok = all(checks.values())
        return JSONResponse({"ready": ok, "checks": checks}, status_code=200 if ok else 503)

    @app.get("/api/v1/stats/response-times", tags=["stats"])
    async def stats_response_times(
        _: Annotated[Principal, Depends(require("viewer"))],
        since: Annotated[
            datetime | None, Query(description="Start (ISO 8601); default: 7 days before until")
        ] = None,
        until: Annotated[datetime | None, Query(description="End (ISO 8601); default: now")] = None,
    ) -> ResponseTimeStats:
        """First-response figures for the cases whose clock started in [since, until)."""
        now = utcnow()
        until = _aware(until, "until") if until else now
        since = _aware(since, "since") if since else until - timedelta(days=7)
        if since >= until:
            raise HTTPException(422, detail="since must be before until")
        if until - since > MAX_RANGE:
            raise HTTPException(422, detail=f"range too large: at most {MAX_RANGE.days} days")
        async with sessions() as session:
            return await response_times(session, since, until, now)

    return app


def _aware(value: datetime, name: str) -> datetime:
    if value.tzinfo is None:
        raise HTTPException(422, detail=f"{name} must include a time zone, e.g. 2026-11-27T10:00Z")
    return value
