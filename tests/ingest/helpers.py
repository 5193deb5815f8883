"""Helpers for the ingest tests: build mentions, read the raw topic back."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord

from shared.config import Settings
from shared.events import RawMention


def mention_dict(external_id: str, **overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "source": "test",
        "external_id": external_id,
        "brand": "acme",
        "author": {"id": f"user-{external_id}"},
        "text": f"post {external_id}",
        "created_at": "2026-11-27T10:00:00Z",
    }
    data.update(overrides)
    return data


def mention(external_id: str, **overrides: Any) -> RawMention:
    return RawMention.model_validate(mention_dict(external_id, **overrides))


def unique(prefix: str = "x") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def parse(record: ConsumerRecord) -> RawMention:
    assert record.value is not None
    return RawMention.model_validate_json(record.value)


async def consume(
    settings: Settings,
    until: Callable[[list[ConsumerRecord]], bool],
    wait_s: float = 20.0,
) -> list[ConsumerRecord]:
    """Read the raw topic from the start (a fresh group) until ``until(records)`` holds."""
    consumer = AIOKafkaConsumer(
        settings.topic_raw,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=f"test-read-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        # Tansu holds a new group's join for about half the session timeout (5 s by
        # default); a short-lived reader can afford a short session.
        session_timeout_ms=2000,
        heartbeat_interval_ms=300,
    )
    await consumer.start()
    records: list[ConsumerRecord] = []
    try:
        async with asyncio.timeout(wait_s):
            while not until(records):
                batches = await consumer.getmany(timeout_ms=200)
                for recs in batches.values():
                    records.extend(recs)
    except TimeoutError:
        raise AssertionError(f"condition not met in {wait_s}s; read {len(records)}") from None
    finally:
        await consumer.stop()
    return records


def has_external_id(external_id: str) -> Callable[[list[ConsumerRecord]], bool]:
    return lambda records: any(parse(r).external_id == external_id for r in records)


def at_least(n: int) -> Callable[[list[ConsumerRecord]], bool]:
    return lambda records: len(records) >= n


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value).astimezone(UTC)


async def consume_topic(
    settings: Settings,
    topic: str,
    until: Callable[[list[ConsumerRecord]], bool],
    wait_s: float = 20.0,
) -> list[ConsumerRecord]:
    """Like ``consume``, for another topic (the dead-letter topic)."""
    return await consume(settings.model_copy(update={"topic_raw": topic}), until, wait_s)
