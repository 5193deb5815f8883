"""An ASGI app served by a real uvicorn server on a free loopback port, for a test's duration."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from shared.http import make_server
from shared.ports import free_port


@contextlib.asynccontextmanager
async def live_server(app: object, what: str = "test server") -> AsyncIterator[str]:
    """Yields the base URL (``http://127.0.0.1:<port>``) once the server accepts requests."""
    port = free_port()
    server, sock = make_server(app, "127.0.0.1", port, what)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(10):
            while not server.started:  # noqa: ASYNC110 (uvicorn offers only a flag)
                await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
