"""Publish raw mentions to Kafka exactly once per event id (as far as ingest can tell).

Order matters: send, await delivery, THEN remember the ids. A crash in between re-sends the
batch next time (a duplicate, harmless: downstream upserts by event id); the other order
could remember an id whose message never reached the broker (a loss).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from aiokafka import AIOKafkaProducer
from sqlalchemy import select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.config import Settings
from shared.db.models import IngestedEvent
from shared.events import RawMention, utcnow

log = logging.getLogger(__name__)

# Small enough for SQLite's bound-parameter limit and one Kafka round of sends.
CHUNK_SIZE = 500


@dataclass
class PublishResult:
    published: int = 0
    duplicates: int = 0
    # The mentions that were new and delivered, as sent (with ingest's ingested_at).
    mentions: list[RawMention] = field(default_factory=list, repr=False)

    def __add__(self, other: PublishResult) -> PublishResult:
        return PublishResult(
            self.published + other.published,
            self.duplicates + other.duplicates,
            self.mentions + other.mentions,
        )


class Publisher:
    """Dedupe by event id against ``ingested_events``, send to ``settings.topic_raw``."""

    def __init__(
        self,
        settings: Settings,
        engine: AsyncEngine,
        producer: AIOKafkaProducer,
        *,
        chunk_size: int = CHUNK_SIZE,
    ) -> None:
        self.topic = settings.topic_raw
        self.engine = engine
        self.producer = producer
        self.chunk_size = chunk_size
        # One publish at a time per process: two callers (webhook, a source) racing on the
        # same id would both miss it in the table and both send it.
        self._lock = asyncio.Lock()
        self._insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert

    async def publish(self, mentions: Sequence[RawMention]) -> PublishResult:
        result = PublishResult()
        for start in range(0, len(mentions), self.chunk_size):
            async with self._lock:
                result += await self._publish_chunk(mentions[start : start + self.chunk_size])
        return result

    async def _publish_chunk(self, mentions: Sequence[RawMention]) -> PublishResult:
        unique: dict[str, RawMention] = {}
        for m in mentions:
            unique.setdefault(m.event_id, m)  # the first copy in the batch wins
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(IngestedEvent.event_id).where(IngestedEvent.event_id.in_(list(unique)))
            )
            seen = set(rows.scalars())
        new = [m for eid, m in unique.items() if eid not in seen]
        duplicates = len(mentions) - len(new)
        if not new:
            return PublishResult(0, duplicates)

        now = utcnow()
        # ingested_at is ingest's own clock (ingest lag = ingested_at - created_at), whatever
        # the file or the sender claimed.
        new = [m.model_copy(update={"ingested_at": now}) for m in new]
        futures = [await self.producer.send(self.topic, m.to_bytes(), key=m.key) for m in new]
        outcomes = await asyncio.gather(*futures, return_exceptions=True)
        delivered = [m for m, o in zip(new, outcomes, strict=True) if not isinstance(o, Exception)]
        if delivered:
            await self._remember(delivered)
        failures = [o for o in outcomes if isinstance(o, Exception)]
        if failures:
            # Delivered ones are remembered; the rest may be retried by the caller.
            raise PublishError(len(delivered), len(failures), failures[0])
        return PublishResult(len(delivered), duplicates, delivered)

    async def _remember(self, mentions: Sequence[RawMention]) -> None:
        now = utcnow()
        stmt = self._insert(IngestedEvent).on_conflict_do_nothing(
            index_elements=[IngestedEvent.event_id]
        )
        async with self.engine.begin() as conn:
            await conn.execute(
                stmt,
                [
                    {"event_id": m.event_id, "source": m.source, "first_seen_at": now}
                    for m in mentions
                ],
            )

    async def check(self) -> str | None:
        """None when ready, else why not (for /readyz)."""
        if not producer_running(self.producer):
            return "kafka producer not running"
        try:
            async with asyncio.timeout(5):
                async with self.engine.connect() as conn:
                    await conn.execute(text("SELECT 1"))
        except Exception as exc:
            return f"database unavailable: {type(exc).__name__}"
        return None


def producer_running(producer: AIOKafkaProducer) -> bool:
    # aiokafka has no public "started" flag: the sender task exists from start() and ends
    # with stop() or a fatal error.
    sender = getattr(producer, "_sender", None)
    task = getattr(sender, "sender_task", None)
    return getattr(producer, "_closed", True) is False and task is not None and not task.done()


class PublishError(RuntimeError):
    """Some messages of a chunk were not delivered; the delivered ones were remembered."""

    def __init__(self, delivered: int, failed: int, first: BaseException) -> None:
        super().__init__(f"{failed} message(s) not delivered ({delivered} delivered): {first!r}")
        self.delivered = delivered
        self.failed = failed
