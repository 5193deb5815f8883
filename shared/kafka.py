"""Kafka helpers: topics, producer, and the consumer loop every worker runs.

The loop gives each service the same guarantees: at-least-once processing, offsets
committed only after the batch's effects are durable, a record that cannot be parsed or
handled goes to the dead-letter topic with the reason (the consumer never dies on one
record), and a clean stop that finishes the in-flight batch, commits and leaves the group.

An error of the infrastructure rather than of a record (the broker or the database down or
refusing a write, a network error) dead-letters nothing: the batch is retried after a pause
that grows to 30 s, until it goes through or the loop is stopped (then nothing is
committed and the records are delivered again). Metrics: ``shared/consumer_metrics.py``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    CommitFailedError,
    IllegalStateError,
    KafkaError,
    MessageSizeTooLargeError,
    RecordTooLargeError,
    TopicAlreadyExistsError,
)
from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from shared import consumer_metrics as metrics
from shared.events import DeadLetter

log = logging.getLogger(__name__)

T = TypeVar("T")

# Bigger than any valid event (20k chars of text plus metadata), small enough to be safe.
MAX_MESSAGE_BYTES = 1_048_576
# A dead letter keeps at most this much of the original (base64 makes it 4/3 larger), so a
# letter about a record near the broker's limit still fits under it.
MAX_ORIGINAL_BYTES = 512 * 1024
RETRY_FIRST = 0.5  # seconds before the first retry after a transient error; doubles
RETRY_MAX = 30.0
CONNECT_TIMEOUT = 120.0  # seconds a starting service waits for the broker


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


# Per partition: a classify batch (256 scored events over 12 partitions, ~25 KB each) or a
# replay chunk fits in one record batch, so it goes out as one request, not a train of 16 KB
# ones (aiokafka's default). Fewer, larger requests; and Tansu's S3 engine (the durable dev
# broker) was seen to misplace a batch that followed another of the same partition within
# milliseconds (docs/operations.md, "Faults").
MAX_BATCH_BYTES = 256 * 1024


def make_producer(bootstrap: str) -> AIOKafkaProducer:
    # acks=all and no idempotence: Tansu has no InitProducerId; effects are idempotent instead.
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        linger_ms=5,
        max_batch_size=MAX_BATCH_BYTES,
        max_request_size=MAX_MESSAGE_BYTES,
    )


def dead_letter(record: ConsumerRecord, reason: str, stage: str) -> DeadLetter:
    original = record.value or b""
    return DeadLetter(
        reason=reason[:2000],
        stage=stage,
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=record.key.decode("utf-8", "replace")[:1000] if record.key else None,
        original_b64=base64.b64encode(original[:MAX_ORIGINAL_BYTES]).decode(),
        truncated=len(original) > MAX_ORIGINAL_BYTES,
        original_size=len(original),
    )


def is_transient(exc: BaseException) -> bool:
    """An error of the broker, the database or the network, not of the record in hand:
    retrying later can succeed, and dead-lettering would lose a good record.

    A message too large for the broker is the record's own fault; any other Kafka error
    (a broker restarting, a write refused by its storage, a timeout) is not.
    """
    if isinstance(exc, MessageSizeTooLargeError | RecordTooLargeError):
        return False
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, KafkaError | OSError | OperationalError | InterfaceError)


def _event_id(value: object) -> str | None:
    """The event id of a parsed record (a raw mention's, or the mention's inside a scored
    one), for the logs."""
    event_id = getattr(value, "event_id", None) or getattr(
        getattr(value, "mention", None), "event_id", None
    )
    return event_id if isinstance(event_id, str) else None


async def connect(
    what: str,
    start: Callable[[], Awaitable[object]],
    stop: asyncio.Event | None = None,
    timeout: float = CONNECT_TIMEOUT,
) -> None:
    """Run a start-up call against the broker (a client's ``start``, creating the topics)
    until it succeeds, so a service started while Kafka restarts waits for it instead of
    dying. After ``timeout`` seconds, or once ``stop`` is set, the last error is raised (and
    the orchestrator restarts the process)."""
    delay = RETRY_FIRST
    deadline = time.monotonic() + timeout
    while True:
        try:
            await start()
            return
        except Exception as exc:
            late = time.monotonic() + delay > deadline or (stop is not None and stop.is_set())
            if not is_transient(exc) or late:
                raise
            log.warning(
                "%s: broker not reachable (%s); retrying in %.1fs",
                what,
                describe_error(exc)[:300],
                delay,
            )
            if stop is None:
                await asyncio.sleep(delay)
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=delay)
            delay = min(delay * 2, 5.0)


class Abandoned(Exception):
    """The loop was stopped while it retried a transient error: nothing more is committed."""


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
        await connect(f"{self.name} consumer", self.consumer.start, self._stopping)
        self.ready.set()
        log.info("%s consuming %s", self.name, self.topic)
        lag_at = 0.0
        try:
            while not self._stopping.is_set():
                batches = await self.consumer.getmany(
                    timeout_ms=self.timeout_ms, max_records=self.max_records
                )
                records = [r for recs in batches.values() for r in recs]
                if records:
                    started = time.perf_counter()
                    metrics.RECORDS.labels(self.name).inc(len(records))
                    metrics.BATCH_SIZE.labels(self.name).observe(len(records))
                    try:
                        await self._process(records)
                    except Abandoned:
                        log.warning(
                            "%s: stopped while retrying; %d records not committed (they will "
                            "be delivered again)",
                            self.name,
                            len(records),
                        )
                        break
                    await self._commit(records)
                    metrics.BATCH_SECONDS.labels(self.name).observe(time.perf_counter() - started)
                if time.monotonic() - lag_at >= 1.0:
                    lag_at = time.monotonic()
                    await self._observe_lag()
        finally:
            # Leaving the group hands our partitions to the other replicas at once.
            await self.consumer.stop()
            metrics.ASSIGNED.labels(self.name).set(0)
            metrics.LAG.labels(self.name, self.topic).set(0)
            log.info("%s stopped", self.name)

    async def _retrying(self, what: str, attempt: Callable[[], Awaitable[None]]) -> None:
        """Run ``attempt``; on a transient error wait (0.5 s doubling to 30 s) and run it
        again, until it succeeds or the loop is stopped (``Abandoned``). Other errors raise."""
        delay = RETRY_FIRST
        while True:
            try:
                await attempt()
                return
            except Exception as exc:
                if not is_transient(exc):
                    raise
                metrics.ERRORS.labels(self.name, "transient").inc()
                if self._stopping.is_set():
                    raise Abandoned from exc
                log.warning(
                    "%s: %s failed (%s); retrying in %.1fs",
                    self.name,
                    what,
                    describe_error(exc)[:300],
                    delay,
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), timeout=delay)
                delay = min(delay * 2, RETRY_MAX)

    async def _process(self, records: list[ConsumerRecord]) -> None:
        items: list[Item[T]] = []
        for record in records:
            try:
                if record.value is None:
                    raise ValueError("empty record value")
                items.append(Item(record, self.parse(record.value)))
            except Exception as exc:  # any parse failure is the record's fault, not ours
                await self._dead_letter(record, describe_error(exc), "parse")
        if not items:
            return
        try:
            await self._retrying("batch", lambda: self.handle(items))
        except Abandoned:
            raise
        except Exception:
            # One bad record must not sink the batch: retry one by one to find it.
            metrics.ERRORS.labels(self.name, "batch").inc()
            log.warning("%s: batch of %d failed, retrying singly", self.name, len(items))
            for item in items:
                try:
                    await self._retrying("record", lambda item=item: self.handle([item]))
                except Abandoned:
                    raise
                except Exception as exc:
                    event_id = _event_id(item.value)
                    log.exception(
                        "%s: record failed (event %s)",
                        self.name,
                        event_id,
                        extra={"event_id": event_id},
                    )
                    await self._dead_letter(item.record, describe_error(exc), "handler")
        self.processed += len(items)

    async def _dead_letter(self, record: ConsumerRecord, reason: str, cause: str) -> None:
        letter = dead_letter(record, reason, self.name)
        await self._retrying(
            "dead letter",
            lambda: self.producer.send_and_wait(self.dlq_topic, letter.to_bytes(), key=record.key),
        )
        self.dead_lettered += 1
        metrics.DEAD_LETTERS.labels(self.name, cause).inc()
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
        try:
            await self.consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError, KafkaError) as exc:
            # The group moved on (a rebalance gave these partitions to another replica) or
            # the broker is away: the effects are done and idempotent, so the records are
            # simply delivered again to whoever holds the partition. Not a reason to die.
            metrics.ERRORS.labels(self.name, "commit").inc()
            log.warning(
                "%s: commit of %d records failed (%s); they will be delivered again",
                self.name,
                len(records),
                describe_error(exc)[:300],
            )

    async def _observe_lag(self) -> None:
        """Records behind the log end on the partitions held now (from the last fetch)."""
        assigned = self.consumer.assignment()
        metrics.ASSIGNED.labels(self.name).set(len(assigned))
        lag = 0
        for tp in assigned:
            end = self.consumer.highwater(tp)
            if end is None:
                continue
            with contextlib.suppress(Exception):  # unassigned meanwhile: counted next time
                position = await asyncio.wait_for(self.consumer.position(tp), timeout=1)
                lag += max(0, end - position)
        metrics.LAG.labels(self.name, self.topic).set(lag)
