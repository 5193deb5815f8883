"""Liveness and readiness endpoints for a service that has no other HTTP surface."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

Check = Callable[[], Awaitable[bool]]


def create_health_app(
    service: str,
    checks: dict[str, Check],
    info: dict[str, Any] | None = None,
    metrics: Callable[[], bytes] | None = None,
) -> FastAPI:
    """``/healthz`` and ``/readyz``; ``info`` (e.g. the loaded model) is added to both bodies.
    With ``metrics``, ``/metrics`` serves what it renders (Prometheus text)."""
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

    if metrics is not None:

        @app.get("/metrics", tags=["metrics"])
        async def prometheus_metrics() -> Response:
            """Prometheus metrics of this process (the consumer loop's and the process's)."""
            return Response(metrics(), media_type=CONTENT_TYPE_LATEST)

    return app
