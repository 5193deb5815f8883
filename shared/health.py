"""Liveness and readiness endpoints for a service that has no other HTTP surface."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse

Check = Callable[[], Awaitable[bool]]


def create_health_app(
    service: str, checks: dict[str, Check], info: dict[str, Any] | None = None
) -> FastAPI:
    """``/healthz`` and ``/readyz``; ``info`` (e.g. the loaded model) is added to both bodies."""
    app = FastAPI(title=f"thirdring {service}", version="0.1.0")
    extra = dict(info or {})

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, Any]:
        """The process is alive."""
        return {"status": "ok", "service": service, **extra}

    @app.get("/readyz", tags=["health"])
    async def readyz() -> JSONResponse:
        """Ready when every dependency check passes (503 and the failing checks otherwise)."""
        results: dict[str, bool] = {}
        for name, check in checks.items():
            try:
                results[name] = await check()
            except Exception:
                results[name] = False
        ok = all(results.values())
        return JSONResponse(
            {"ready": ok, "service": service, "checks": results, **extra},
            status_code=200 if ok else 503,
        )

    return app
