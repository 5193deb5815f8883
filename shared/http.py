"""Serving an ASGI app inside a worker, stopped together with it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import uvicorn


class _EmbeddedServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to the worker that runs it."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve(app: object, host: str, port: int, stop: asyncio.Event) -> None:
    server = _EmbeddedServer(
        uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off")  # type: ignore[arg-type]
    )
    task = asyncio.create_task(server.serve())
    stop_wait = asyncio.create_task(stop.wait())
    await asyncio.wait({task, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
    server.should_exit = True
    stop_wait.cancel()
    await task
