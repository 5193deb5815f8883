"""The embedded broker in durable mode keeps records and committed offsets over a restart."""

from __future__ import annotations

import uuid
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from shared.broker import EmbeddedBroker
from shared.kafka import ensure_topics

N = 5
COMMITTED = 3  # the first group has handled records 0..2


def _consumer(bootstrap: str, group: str, *topics: str) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        # Faster group joins on Tansu when subscribing.
        session_timeout_ms=2000,
        heartbeat_interval_ms=300,
    )


async def _read_all(consumer: AIOKafkaConsumer, tp: TopicPartition, want: int) -> list[bytes]:
    values: list[bytes] = []
    for _ in range(50):
        batch = await consumer.getmany(tp, timeout_ms=200)
        values.extend(r.value for r in batch.get(tp, []))
        if len(values) >= want:
            break
    return values


async def test_durable_broker_keeps_records_and_offsets(tmp_path: Path) -> None:
    topic = f"durable-{uuid.uuid4().hex[:8]}"
    tp = TopicPartition(topic, 0)
    group = f"g-{uuid.uuid4().hex[:8]}"
    sent = [f"record-{i}".encode() for i in range(N)]

    first = EmbeddedBroker(tmp_path, durable=True).start()
    port = first.port
    try:
        await ensure_topics(first.bootstrap_servers, [topic], partitions=1)
        producer = AIOKafkaProducer(bootstrap_servers=first.bootstrap_servers, acks="all")
        await producer.start()
        try:
            for value in sent:
                await producer.send_and_wait(topic, value, key=b"k", partition=0)
        finally:
            await producer.stop()

        consumer = _consumer(first.bootstrap_servers, group)
        await consumer.start()
        try:
            consumer.assign([tp])
            got = await _read_all(consumer, tp, N)
            assert got == sent
            await consumer.commit({tp: COMMITTED})
            assert await consumer.committed(tp) == COMMITTED
        finally:
            await consumer.stop()
    finally:
        first.stop()

    second = EmbeddedBroker(tmp_path, durable=True, port=port).start()
    try:
        assert second.bootstrap_servers == first.bootstrap_servers
        # (a) a group that never committed reads every record from the start.
        fresh = _consumer(second.bootstrap_servers, f"g-{uuid.uuid4().hex[:8]}")
        await fresh.start()
        try:
            fresh.assign([tp])
            assert await _read_all(fresh, tp, N) == sent
        finally:
            await fresh.stop()

        # (b) the first group, joining as a subscriber, resumes where it committed.
        resumed = _consumer(second.bootstrap_servers, group, topic)
        await resumed.start()
        try:
            assert await resumed.committed(tp) == COMMITTED
            assert await _read_all(resumed, tp, N - COMMITTED) == sent[COMMITTED:]
        finally:
            await resumed.stop()
    finally:
        second.stop()
