"""Deadlines are persisted: a restarted alert service fires what fell due while it was down,
and nothing it had already sent is sent again."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import select

from services.alert.sla.policies import SlaPolicy
from services.alert.worker import run_alert
from shared.config import Settings
from shared.db.engine import make_engine, make_sessionmaker
from shared.db.models import Case
from shared.events import utcnow
from shared.kafka import ensure_topics, make_producer
from tests.factories import raw, scored
from tests.http_receiver import HttpReceiver
from tests.kafka_reader import wait_for

pytestmark = pytest.mark.slow

POLICY = SlaPolicy(targets={"P1": 6, "P2": 6, "P3": 6, "P4": 6}, warn_at_fraction=0.3)


async def test_breach_fires_after_restart_and_warning_is_not_repeated(
    settings: Settings, receiver: HttpReceiver, tmp_path: Path
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(json.dumps({"policies": [POLICY.model_dump()]}))
    s = settings.model_copy(
        update={
            "notify_webhook_url": receiver.url,
            "notify_webhook_secret": SecretStr("x"),
            "alerting_file": policy,
            "scheduler_interval": 0.1,
            "outbox_interval": 0.1,
        }
    )
    await ensure_topics(s.kafka_bootstrap_servers, [s.topic_scored, s.topic_dlq], s.partitions)
    producer = make_producer(s.kafka_bootstrap_servers)
    await producer.start()
    event = scored(raw("r1", utcnow(), conversation="restart"))
    await producer.send_and_wait(s.topic_scored, event.to_bytes(), key=event.key)
    await producer.stop()

    def stages() -> list[str]:
        return [r.json()["stage"] for r in receiver.requests]

    stop = asyncio.Event()
    first = asyncio.create_task(run_alert(s, stop, serve_api=False))
    await wait_for(lambda: stages() == ["warning"], timeout=30)
    stop.set()
    await first

    # Down past the breach time: nobody is there to fire it.
    engine = make_engine(s.resolved_database_url)
    async with make_sessionmaker(engine)() as session:
        case = await session.scalar(select(Case))
    await engine.dispose()
    assert case is not None and case.status == "open"
    due = case.opened_at + timedelta(seconds=6)
    await asyncio.sleep(max(0.0, (due - utcnow()).total_seconds()) + 0.5)
    assert stages() == ["warning"]

    stop = asyncio.Event()
    second = asyncio.create_task(run_alert(s, stop, serve_api=False))
    await wait_for(lambda: stages() == ["warning", "breach"], timeout=30)
    await asyncio.sleep(1.0)  # give a duplicate time to show up, if there were one
    stop.set()
    await second
    assert stages() == ["warning", "breach"]
