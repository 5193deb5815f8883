"""The alert service's HTTP API: health, cases for the front line, stats for managers.

Routers stay thin; the logic lives in cases/ and stats/.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Annotated, Literal

from fastapi import FastAPI, HTTPException, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.alert.stats.service import ResponseTimeStats, response_times
from shared.db.models import Case, ResponseCycle
from shared.events import utcnow

MAX_RANGE = timedelta(days=366)


class CaseView(BaseModel):
    id: int
    conversation_id: str
    brand: str
    source: str
    status: str
    priority: str
    opened_at: datetime
    answered_at: datetime | None
    cycle: int
    due_at: datetime | None
    time_left_seconds: float | None
    breached: bool
    reply_url: str | None


def create_api_app(
    sessions: async_sessionmaker[AsyncSession],
    ready: Callable[[], Awaitable[bool]] | None = None,
) -> FastAPI:
    app = FastAPI(
        title="thirdring alert API",
        version="0.1.0",
        description="Cases and response-time statistics. Answer before the third ring.",
    )

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

    @app.get("/api/v1/cases", tags=["cases"])
    async def list_cases(
        status: Literal["open", "answered", "all"] = "open",
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[CaseView]:
        """Cases with their current cycle, the least time left first."""
        now = utcnow()
        stmt = select(Case, ResponseCycle).join(
            ResponseCycle, (ResponseCycle.case_id == Case.id) & (ResponseCycle.seq == Case.cycles)
        )
        if status != "all":
            stmt = stmt.where(Case.status == status)
        stmt = stmt.order_by(ResponseCycle.due_at.is_(None), ResponseCycle.due_at, Case.id).limit(
            limit
        )
        async with sessions() as session:
            rows = (await session.execute(stmt)).all()
        return [
            CaseView(
                id=c.id,
                conversation_id=c.conversation_id,
                brand=c.brand,
                source=c.source,
                status=c.status,
                priority=cy.priority,
                opened_at=c.opened_at,
                answered_at=c.answered_at,
                cycle=cy.seq,
                due_at=cy.due_at,
                time_left_seconds=(cy.due_at - now).total_seconds()
                if cy.due_at and c.status == "open"
                else None,
                breached=cy.breached,
                reply_url=c.reply_url,
            )
            for c, cy in rows
        ]

    return app


def _aware(value: datetime, name: str) -> datetime:
    if value.tzinfo is None:
        raise HTTPException(422, detail=f"{name} must include a time zone, e.g. 2026-11-27T10:00Z")
    return value
