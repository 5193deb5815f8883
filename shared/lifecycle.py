"""Running a service's loops together: until asked to stop, or until one of them fails."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


async def every(
    interval: float, stop: asyncio.Event, name: str, fn: Callable[[], Awaitable[int]]
) -> None:
    """Call ``fn`` until stopped; sleep ``interval`` when it had nothing to do.

    An error is logged and the loop goes on: one bad row must not stop the timers.
    """
    while not stop.is_set():
        try:
            busy = await fn()
        except Exception:
            log.exception("%s failed; retrying in %.1fs", name, interval)
            busy = 0
        if not busy:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)


async def supervise(tasks: list[asyncio.Task[None]], stop: asyncio.Event) -> None:
    """Wait for ``stop``; if a task fails first, stop the rest and re-raise its error.

    A task that simply finishes (a one-off report, a source that ran out) ends alone.
    """
    stop_wait = asyncio.create_task(stop.wait())
    pending: set[asyncio.Task[None]] = set(tasks)
    try:
        while True:
            done, _ = await asyncio.wait([stop_wait, *pending], return_when=asyncio.FIRST_COMPLETED)
            for task in done - {stop_wait}:
                pending.discard(task)
                if not task.cancelled() and task.exception() is not None:
                    log.error("%s failed: %r", task.get_name(), task.exception())
                    raise task.exception()  # type: ignore[misc]
            if stop_wait in done:
                return
    finally:
        stop.set()
        stop_wait.cancel()
