from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.ingest.publisher import Publisher, PublishError
from shared.config import Settings
from shared.db.models import IngestedEvent
from tests.ingest.helpers import at_least, consume, has_external_id, mention, parse, unique


async def _stored_ids(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        return set((await conn.execute(select(IngestedEvent.event_id))).scalars())


async def test_publish_dedupes_within_batch_and_against_table(
    publisher: Publisher, settings: Settings, engine: AsyncEngine
) -> None:
    a, b = mention("a", conversation_id="conv-1"), mention("b", conversation_id="conv-2")
    first = await publisher.publish([a, b, a])
    assert (first.published, first.duplicates) == (2, 1)
    assert await _stored_ids(engine) == {a.event_id, b.event_id}

    again = await publisher.publish([b, a, mention("c")])
    assert (again.published, again.duplicates) == (1, 2)

    records = await consume(settings, has_external_id("c"))
    assert sorted(parse(r).external_id for r in records) == ["a", "b", "c"]
    keys = {parse(r).external_id: r.key for r in records}
    assert keys == {"a": b"conv-1", "b": b"conv-2", "c": b"test:c"}


async def test_publish_chunks_large_batches(
    settings: Settings, engine: AsyncEngine, producer: Any
) -> None:
    publisher = Publisher(settings, engine, producer, chunk_size=7)
    batch = [mention(f"m{i}") for i in range(20)]
    result = await publisher.publish(batch + batch[:5])
    assert (result.published, result.duplicates) == (20, 5)
    async with engine.connect() as conn:
        count = (await conn.execute(select(func.count()).select_from(IngestedEvent))).scalar()
    assert count == 20
    assert len(await consume(settings, at_least(20))) == 20


class _FailingProducer:
    """Delivery fails for every second message: only delivered ids may be remembered."""

    def __init__(self) -> None:
        self.sent = 0

    async def send(self, topic: str, value: bytes, key: bytes) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.sent += 1
        if self.sent % 2:
            fut.set_result(None)
        else:
            fut.set_exception(ConnectionError("broker went away"))
        return fut


async def test_undelivered_ids_are_not_remembered(settings: Settings, engine: AsyncEngine) -> None:
    publisher = Publisher(settings, engine, _FailingProducer())  # type: ignore[arg-type]
    ms = [mention(unique()) for _ in range(4)]
    with pytest.raises(PublishError) as info:
        await publisher.publish(ms)
    assert (info.value.delivered, info.value.failed) == (2, 2)
    # Delivered first and third; the others stay publishable (a retry sends them).
    assert await _stored_ids(engine) == {ms[0].event_id, ms[2].event_id}
