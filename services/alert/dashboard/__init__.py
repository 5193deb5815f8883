"""The managers' dashboard: one static page (HTML, JS, CSS) served by the alert service.

The page holds no data, so it and its files are served without a token; every figure it
shows comes from the stats API, called from the browser with the viewer token the user
enters (kept in sessionStorage, sent as ``Authorization: Bearer``).

Charts use Chart.js 4.6.1 (MIT), vendored as ``static/vendor/chart.umd.min.js`` (the UMD
build from the npm package ``chart.js@4.6.1``, unmodified) so the page works offline.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse, RedirectResponse

STATIC = Path(__file__).parent / "static"

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".md": "text/plain; charset=utf-8",
}
# No data inside, but a redeploy must reach browsers: revalidate each time.
_HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}

router = APIRouter(tags=["dashboard"], include_in_schema=False)


@router.get("/dashboard")
async def dashboard() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type=_TYPES[".html"], headers=_HEADERS)


@router.get("/dashboard/")
async def dashboard_slash() -> RedirectResponse:
    return RedirectResponse("/dashboard", status_code=308)


@router.get("/dashboard/static/{name:path}")
async def static_file(name: str) -> FileResponse:
    """Only regular files under ``static/`` with a known type; nothing else, no listing."""
    root = STATIC.resolve()
    path = (root / name).resolve()
    if not path.is_relative_to(root) or not path.is_file() or path.suffix not in _TYPES:
        raise HTTPException(404, detail="not found")
    return FileResponse(path, media_type=_TYPES[path.suffix], headers=_HEADERS)
