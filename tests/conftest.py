"""Real parts for the tests: a Tansu broker, SQLite and PostgreSQL, loopback HTTP servers."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.broker import EmbeddedBroker
from shared.config import Settings
from shared.db.engine import make_engine
from tests.http_receiver import HttpReceiver
from tests.procs import database

POSTGRES_URL = os.environ.get("THIRDRING_TEST_POSTGRES_URL", "")


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """One in-memory Tansu broker for the session; tests use their own topic names."""
    with EmbeddedBroker(tmp_path_factory.mktemp("tansu")) as b:
        yield b


def _db_params() -> list[object]:
    params: list[object] = ["sqlite"]
    if POSTGRES_URL:
        params.append(pytest.param("postgres", marks=pytest.mark.postgres))
    elif os.environ.get("CI"):
        # In CI the database tests must run on both; a missing server is a failure, not a skip.
        raise RuntimeError("CI=true but THIRDRING_TEST_POSTGRES_URL is not set")
    return params


@pytest.fixture(params=_db_params())
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A migrated, empty database: a fresh SQLite file, or a fresh database in PostgreSQL
    (one per test keeps PostgreSQL tests independent without dropping tables)."""
    async with database(POSTGRES_URL if request.param == "postgres" else None, tmp_path) as url:
        yield url


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    eng = make_engine(db_url)
    yield eng
    await eng.dispose()


@pytest.fixture
def topics() -> dict[str, str]:
    """Unique topic names per test, so tests sharing the broker never see each other."""
    suffix = uuid.uuid4().hex[:8]
    return {
        "topic_raw": f"raw-{suffix}",
        "topic_scored": f"scored-{suffix}",
        "topic_dlq": f"dlq-{suffix}",
    }


@pytest.fixture
def settings(
    broker: EmbeddedBroker, db_url: str, topics: dict[str, str], tmp_path: Path
) -> Settings:
    return Settings(
        data_dir=tmp_path / "var",
        kafka_bootstrap_servers=broker.bootstrap_servers,
        database_url=db_url,
        partitions=3,
        consumer_group_prefix=f"test-{uuid.uuid4().hex[:6]}",
        **topics,
    )


@pytest.fixture
def receiver() -> Iterator[HttpReceiver]:
    r = HttpReceiver().start()
    yield r
    r.stop()


@pytest.fixture(scope="session")
def classifier():  # type: ignore[no-untyped-def]
    """The real classifier (prepared encoder + shipped heads), loaded once per session."""
    from services.classify.model import default_model_dir
    from services.classify.model.prepare import prepare_encoder
    from services.classify.scoring import Classifier

    prepare_encoder(default_model_dir())
    return Classifier.load(default_model_dir())
