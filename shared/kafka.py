"""Kafka helpers: topics, producer, and the consumer loop every worker runs.

The loop gives each service the same guarantees: at-least-once processing, offsets
committed only after the batch's effects are durable, a record that cannot be parsed or
handled goes to the dead-letter topic with the reason (the consumer never dies on one
record), and a clean stop that finishes the in-flight batch, commits and leaves the group.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from pydantic import ValidationError

from shared.events import DeadLetter

log = logging.getLogger(__name__)

T = TypeVar("T")

# Bigger than any valid event (20k chars of text plus metadata), small enough to be safe.
MAX_MESSAGE_BYTES = 1_048_576


async def ensure_topics(bootstrap: str, names: Sequence[str], partitions: int) -> None:
    """Create the topics if missing; an existing topic is left as it is."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [n for n in names if n not in existing]
        if missing:
            try:
                await admin.create_topics(
                    [NewTopic(n, num_partitions=partitions, replication_factor=1) for n in missing]
                )
            except TopicAlreadyExistsError:
                pass  # another process created it between our look and our create
    finally:
        await admin.close()


def make_producer(bootstrap: str) -> AIOKafkaProducer:
    # acks=all and no idempotence: Tansu has no InitProducerId; effects are idempotent instead.
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        linger_ms=5,
        max_request_size=MAX_MESSAGE_BYTES,
    )


def dead_letter(record: ConsumerRecord, reason: str, stage: str) -> DeadLetter:
    return DeadLetter(
        reason=reason[:2000],
        stage=stage,
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=record.key.decode("utf-8", "replace") if record.key else None,
        original_b64=base64.b64encode(record.value or b"").decode(),
    )


def describe_error(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        parts = [
            f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in exc.errors()
        ]
        return "invalid event: " + "; ".join(parts[:10])
    return f"{type(exc).__name__}: {exc}"


@dataclass
class Item(Generic[T]):
    record: ConsumerRecord
    value: T


Handler = Callable[[list[Item[T]]], Awaitable[None]]


class ConsumerLoop(Generic[T]):
    """Consume ``topic`` in batches: parse, handle, dead-letter the failures, commit."""

    def __init__(
        self,
        *,
        name: str,
        bootstrap: str,
        topic: str,
        group_id: str,
        parse: Callable[[bytes], T],
        handle: Handler[T],
        producer: AIOKafkaProducer,
        dlq_topic: str,
        max_records: int = 256,
        timeout_ms: int = 200,
        session_timeout_ms: int = 6000,
        heartbeat_interval_ms: int = 1000,
    ) -> None:
        self.name = name
        self.topic = topic
        self.parse = parse
        self.handle = handle
        self.producer = producer
        self.dlq_topic = dlq_topic
        self.max_records = max_records
        self.timeout_ms = timeout_ms
        self.consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            group_id=group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=MAX_MESSAGE_BYTES * 2,
            # A short session makes joins and rebalances quick (a replica that dies is noticed
            # within it); 6 s is Kafka's minimum by default. The model thread never blocks
            # heartbeats, which run on the event loop.
            session_timeout_ms=session_timeout_ms,
            heartbeat_interval_ms=heartbeat_interval_ms,
        )
        self._stopping = asyncio.Event()
        self.processed = 0
        self.dead_lettered = 0
        self.ready = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        await self.consumer.start()
        self.ready.set()
        log.info("%s consuming %s", self.name, self.topic)
        try:
            while not self._stopping.is_set():
                batches = await self.consumer.getmany(
                    timeout_ms=self.timeout_ms, max_records=self.max_records
                )
                records = [r for recs in batches.values() for r in recs]
                if not records:
                    continue
                await self._process(records)
                await self._commit(records)
        finally:
            # Leaving the group hands our partitions to the other replicas at once.
            await self.consumer.stop()
            log.info("%s stopped", self.name)

    async def _process(self, records: list[ConsumerRecord]) -> None:
        items: list[Item[T]] = []
        for record in records:
            try:
                if record.value is None:
                    raise ValueError("empty record value")
                items.append(Item(record, self.parse(record.value)))
            except Exception as exc:  # any parse failure is the record's fault, not ours
                await self._dead_letter(record, describe_error(exc))
        if not items:
            return
        try:
            await self.handle(items)
        except Exception:
            # One bad record must not sink the batch: retry one by one to find it.
            log.warning("%s: batch of %d failed, retrying singly", self.name, len(items))
            for item in items:
                try:
                    await self.handle([item])
                except Exception as exc:
                    log.exception("%s: record failed", self.name)
                    await self._dead_letter(item.record, describe_error(exc))
        self.processed += len(items)

    async def _dead_letter(self, record: ConsumerRecord, reason: str) -> None:
        letter = dead_letter(record, reason, self.name)
        await self.producer.send_and_wait(self.dlq_topic, letter.to_bytes(), key=record.key)
        self.dead_lettered += 1
        log.warning(
            "%s: dead-lettered %s[%d]@%d: %s",
            self.name,
            record.topic,
            record.partition,
            record.offset,
            reason[:300],
        )

    async def _commit(self, records: list[ConsumerRecord]) -> None:
        offsets: dict[TopicPartition, int] = {}
        for r in records:
            tp = TopicPartition(r.topic, r.partition)
            offsets[tp] = max(offsets.get(tp, -1), r.offset + 1)
        await self.consumer.commit(offsets)
