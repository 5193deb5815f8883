"""Serving an ASGI app inside a worker (uvicorn), stopped together with the worker."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator

import uvicorn


class EmbeddedServer(uvicorn.Server):
    """A uvicorn server that leaves signals to the process running it (the CLI sets ``stop``);
    uvicorn's own handlers would replace ours and re-raise the signal after shutdown."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def bind(host: str, port: int, what: str) -> socket.socket:
    """Bind here so a busy port is an OSError naming it; uvicorn would sys.exit() instead."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets it recognises as TCP,
    # and without it kept-alive responses wait ~40 ms on Nagle and delayed ACKs.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"{what} cannot listen on {host}:{port}: {exc}") from exc
    sock.set_inheritable(True)
    return sock


def make_server(
    app: object, host: str, port: int, what: str = "HTTP server"
) -> tuple[EmbeddedServer, socket.socket]:
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off")  # type: ignore[arg-type]
    return EmbeddedServer(config), bind(host, port, what)


async def serve(app: object, host: str, port: int, stop: asyncio.Event, what: str) -> None:
    """Serve until ``stop`` is set, then let in-flight requests finish."""
    server, sock = make_server(app, host, port, what)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    stop_wait = asyncio.create_task(stop.wait())
    await asyncio.wait({task, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
    server.should_exit = True
    stop_wait.cancel()
    await task
