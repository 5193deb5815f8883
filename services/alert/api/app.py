"""The alert service's HTTP API: health, cases for the front line, stats for managers.

Routers stay thin; the logic lives in cases/ and stats/.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.alert.api import admin, cases, stats
from services.alert.dashboard import router as dashboard_router


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
    app.include_router(stats.router)
    app.include_router(dashboard_router)  # /dashboard: static page, data via the stats API

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

    return app
