from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from aiokafka import AIOKafkaProducer
from sqlalchemy.ext.asyncio import AsyncEngine

from services.ingest.publisher import Publisher
from shared.config import Settings
from shared.kafka import ensure_topics, make_producer
from tests.ingest.fixture_server import Ingest
from tests.ingest.mastodon_server import MastodonServer


@pytest.fixture
async def producer(settings: Settings) -> AsyncIterator[AIOKafkaProducer]:
    await ensure_topics(
        settings.kafka_bootstrap_servers,
        [settings.topic_raw, settings.topic_dlq],
        settings.partitions,
    )
    p = make_producer(settings.kafka_bootstrap_servers)
    await p.start()
    yield p
    await p.stop()


@pytest.fixture
def publisher(settings: Settings, engine: AsyncEngine, producer: AIOKafkaProducer) -> Publisher:
    return Publisher(settings, engine, producer)


@pytest.fixture
def ingest(settings: Settings, publisher: Publisher, engine: AsyncEngine) -> Ingest:
    """Settings, publisher and cursor database together, for the connector tests."""
    return Ingest(settings, publisher, engine)


@pytest.fixture
def mastodon_server() -> Iterator[MastodonServer]:
    server = MastodonServer.with_fixtures(token="brand-token").start()
    yield server
    server.stop()
