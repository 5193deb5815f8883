"""The supervisor of a service's loops: stop on request or on the first failure only."""

from __future__ import annotations

import asyncio

import pytest

from shared.lifecycle import supervise


async def test_a_task_that_finishes_does_not_stop_the_others() -> None:
    stop = asyncio.Event()
    finished = asyncio.create_task(asyncio.sleep(0))
    forever = asyncio.create_task(stop.wait())
    runner = asyncio.create_task(supervise([finished, forever], stop))
    await asyncio.sleep(0.1)
    assert finished.done() and not runner.done() and not stop.is_set()
    stop.set()
    await runner
    assert forever.done()


async def test_a_failing_task_stops_everything_and_raises() -> None:
    stop = asyncio.Event()

    async def boom() -> None:
        raise RuntimeError("broken")

    forever = asyncio.create_task(stop.wait())
    with pytest.raises(RuntimeError, match="broken"):
        await supervise([asyncio.create_task(boom()), forever], stop)
    assert stop.is_set()
