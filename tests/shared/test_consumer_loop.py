"""ConsumerLoop on a real broker: dead letters, single retries, commits and a clean stop."""

from __future__ import annotations

import asyncio
import base64
import functools
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

import shared.kafka
from shared.broker import EmbeddedBroker
from shared.events import DeadLetter, RawMention
from shared.kafka import ConsumerLoop, Item, ensure_topics, make_producer
from tests.factories import raw
from tests.kafka_reader import read_topic, wait_for

AT = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
BAD_BYTES = b"\xff\xfe{not json"


@pytest.fixture(autouse=True)
def _fast_group_joins(monkeypatch: pytest.MonkeyPatch) -> None:
    # Same consumer ConsumerLoop builds, with shorter group timings: Tansu otherwise takes
    # many seconds to (re)join a group, which is all waiting and no testing.
    fast = functools.partial(AIOKafkaConsumer, session_timeout_ms=2000, heartbeat_interval_ms=300)
    monkeypatch.setattr(shared.kafka, "AIOKafkaConsumer", fast)


@pytest.fixture
async def producer(broker: EmbeddedBroker) -> AsyncIterator[AIOKafkaProducer]:
    p = make_producer(broker.bootstrap_servers)
    await p.start()
    yield p
    await p.stop()


@pytest.fixture
async def kafka_topics(broker: EmbeddedBroker, topics: dict[str, str]) -> dict[str, str]:
    # One partition: offsets are then the order records were sent in.
    await ensure_topics(
        broker.bootstrap_servers, [topics["topic_raw"], topics["topic_dlq"]], partitions=1
    )
    return topics


class Recorder:
    """A handler that remembers every call and refuses batches holding a poison record."""

    def __init__(self, poison: str | None = None) -> None:
        self.poison = poison
        self.calls: list[list[str]] = []
        self.handled: list[str] = []
        self.after: asyncio.Event | None = None

    async def __call__(self, items: list[Item[RawMention]]) -> None:
        ids = [i.value.external_id for i in items]
        self.calls.append(ids)
        if self.poison in ids:
            raise RuntimeError(f"cannot handle {self.poison}")
        self.handled.extend(ids)


def _loop(
    broker: EmbeddedBroker,
    topics: dict[str, str],
    producer: AIOKafkaProducer,
    group: str,
    handle: Recorder,
) -> ConsumerLoop[RawMention]:
    return ConsumerLoop(
        name="test-stage",
        bootstrap=broker.bootstrap_servers,
        topic=topics["topic_raw"],
        group_id=group,
        parse=RawMention.model_validate_json,
        handle=handle,
        producer=producer,
        dlq_topic=topics["topic_dlq"],
    )


async def _send(producer: AIOKafkaProducer, topic: str, *values: bytes) -> None:
    for value in values:
        await producer.send_and_wait(topic, value, key=b"conv-1", partition=0)


async def _finish(task: asyncio.Task[None]) -> None:
    # run() must return on its own after stop(), without an exception.
    await asyncio.wait_for(task, timeout=10)
    assert task.exception() is None


async def test_parse_and_handler_failures_are_dead_lettered(
    broker: EmbeddedBroker, kafka_topics: dict[str, str], producer: AIOKafkaProducer
) -> None:
    topic = kafka_topics["topic_raw"]
    poison = raw("poison", AT).to_bytes()
    await _send(
        producer,
        topic,
        raw("g0", AT).to_bytes(),  # offset 0
        BAD_BYTES,  # offset 1: not an event
        raw("g1", AT).to_bytes(),  # offset 2
        poison,  # offset 3: the handler refuses it
        raw("g2", AT).to_bytes(),  # offset 4
    )
    handler = Recorder(poison="poison")
    loop = _loop(broker, kafka_topics, producer, f"g-{uuid.uuid4().hex[:8]}", handler)
    task = asyncio.create_task(loop.run())
    try:
        await wait_for(lambda: loop.dead_lettered == 2 and len(handler.handled) == 3)
    finally:
        loop.stop()
        await _finish(task)

    # The good records were each handled exactly once, the poison never.
    assert sorted(handler.handled) == ["g0", "g1", "g2"]
    # The first attempt was the whole batch; the retry then went one record at a time.
    assert handler.calls[0] == ["g0", "g1", "poison", "g2"]
    assert handler.calls[1:] == [["g0"], ["g1"], ["poison"], ["g2"]]
    assert loop.processed == 4

    records = await read_topic(
        broker.bootstrap_servers, kafka_topics["topic_dlq"], until=lambda rs: len(rs) >= 2
    )
    letters = {
        letter.offset: letter
        for letter in (DeadLetter.model_validate_json(r.value) for r in records)
    }
    assert set(letters) == {1, 3}

    unparsable = letters[1]
    assert unparsable.stage == "test-stage"
    assert unparsable.topic == topic and unparsable.partition == 0
    assert unparsable.reason.startswith("invalid event")
    assert base64.b64decode(unparsable.original_b64) == BAD_BYTES
    assert unparsable.key == "conv-1"

    refused = letters[3]
    assert refused.stage == "test-stage"
    assert refused.reason == "RuntimeError: cannot handle poison"
    assert refused.topic == topic and refused.partition == 0
    assert base64.b64decode(refused.original_b64) == poison


async def test_committed_records_are_not_handled_again(
    broker: EmbeddedBroker, kafka_topics: dict[str, str], producer: AIOKafkaProducer
) -> None:
    topic = kafka_topics["topic_raw"]
    group = f"g-{uuid.uuid4().hex[:8]}"
    await _send(producer, topic, *(raw(f"old{i}", AT).to_bytes() for i in range(3)))

    first = Recorder()
    loop1 = _loop(broker, kafka_topics, producer, group, first)
    original = first.__call__

    async def handle_then_stop(items: list[Item[RawMention]]) -> None:
        await original(items)
        if len(first.handled) >= 3:
            loop1.stop()  # stop while this batch is in flight: it must still be committed

    loop1.handle = handle_then_stop
    task1 = asyncio.create_task(loop1.run())
    await wait_for(task1.done)
    await _finish(task1)
    assert first.handled == ["old0", "old1", "old2"]

    probe = AIOKafkaConsumer(
        bootstrap_servers=broker.bootstrap_servers, group_id=group, enable_auto_commit=False
    )
    await probe.start()
    try:
        assert await probe.committed(TopicPartition(topic, 0)) == 3
    finally:
        await probe.stop()

    await _send(producer, topic, raw("new0", AT).to_bytes())
    second = Recorder()
    loop2 = _loop(broker, kafka_topics, producer, group, second)
    task2 = asyncio.create_task(loop2.run())
    try:
        # Same partition, in order: had the old records come back, they would precede this.
        await wait_for(lambda: "new0" in second.handled)
    finally:
        loop2.stop()
        await _finish(task2)
    assert second.handled == ["new0"]
    assert loop2.dead_lettered == 0


async def test_stop_ends_run_when_idle(
    broker: EmbeddedBroker, kafka_topics: dict[str, str], producer: AIOKafkaProducer
) -> None:
    loop = _loop(broker, kafka_topics, producer, f"g-{uuid.uuid4().hex[:8]}", Recorder())
    task = asyncio.create_task(loop.run())
    await asyncio.wait_for(loop.ready.wait(), timeout=10)
    await asyncio.sleep(0.5)  # a few empty polls
    assert not task.done()
    loop.stop()
    await _finish(task)
    assert loop.processed == 0
