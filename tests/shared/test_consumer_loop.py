"""ConsumerLoop on a real broker: dead letters, single retries, commits and a clean stop."""

from __future__ import annotations

import asyncio
import base64
import functools
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaConnectionError

import shared.kafka
from shared.broker import EmbeddedBroker
from shared.events import DeadLetter, RawMention
from shared.kafka import ConsumerLoop, Item, connect, ensure_topics, make_producer
from shared.ports import free_port
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


async def _run_until(loop: ConsumerLoop[RawMention], done: Callable[[], object]) -> None:
    """Run ``loop`` until ``done()`` holds, then stop it (it must end cleanly)."""
    task = asyncio.create_task(loop.run())
    try:
        await wait_for(done, timeout=30)
    finally:
        loop.stop()
        await _finish(task)


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


async def test_stop_leaves_the_group(
    broker: EmbeddedBroker,
    kafka_topics: dict[str, str],
    producer: AIOKafkaProducer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A stopped consumer tells the broker it leaves (LeaveGroup), so the other replicas get
    its partitions in the next rebalance instead of after its session times out.

    aiokafka leaves only from a generation above 0, and Tansu numbers its first generation
    0 (Apache Kafka: 1): a lone replica on Tansu just times out. So two replicas here."""
    caplog.set_level(logging.INFO, logger="aiokafka.consumer.group_coordinator")
    group = f"g-{uuid.uuid4().hex[:8]}"
    first = _loop(broker, kafka_topics, producer, group, Recorder())
    second = _loop(broker, kafka_topics, producer, group, Recorder())
    tasks = [asyncio.create_task(first.run())]
    try:
        await wait_for(lambda: first.consumer.assignment(), timeout=30)
        tasks.append(asyncio.create_task(second.run()))  # a rebalance: generation 1

        def generation(loop: ConsumerLoop[RawMention]) -> int:
            coordinator = loop.consumer._coordinator  # None until the consumer starts
            return -1 if coordinator is None else int(coordinator.generation)

        await wait_for(lambda: min(generation(first), generation(second)) >= 1, timeout=60)
    finally:
        first.stop()
        await _finish(tasks[0])
        second.stop()
        await _finish(tasks[1])
    assert "LeaveGroup request succeeded" in caplog.text


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


# -- faults of the infrastructure, oversized records, commits, metrics ---------------------


def _sample(name: str, labels: dict[str, str]) -> float:
    from shared.consumer_metrics import REGISTRY

    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_a_broker_error_is_retried_not_dead_lettered(
    broker: EmbeddedBroker, kafka_topics: dict[str, str], producer: AIOKafkaProducer
) -> None:
    """A handler that fails because the broker or the database is away must not lose the
    record to the dead-letter topic: the batch is retried, whole, until it goes through."""
    from aiokafka.errors import KafkaConnectionError, UnknownError
    from sqlalchemy.exc import OperationalError

    await _send(
        producer, kafka_topics["topic_raw"], *(raw(f"t{i}", AT).to_bytes() for i in range(3))
    )
    failures = [
        KafkaConnectionError("broker restarting"),
        UnknownError(),  # what Tansu answers when its storage refuses a write
        OperationalError("insert", {}, ConnectionResetError("database went away")),
    ]
    handler = Recorder()
    original = handler.__call__

    async def flaky(items: list[Item[RawMention]]) -> None:
        if failures:
            handler.calls.append([i.value.external_id for i in items])
            raise failures.pop(0)
        await original(items)

    name = f"flaky-{uuid.uuid4().hex[:6]}"
    loop = _loop(broker, kafka_topics, producer, f"g-{uuid.uuid4().hex[:8]}", handler)
    loop.name, loop.handle = name, flaky
    await _run_until(loop, lambda: len(handler.handled) == 3)
    assert handler.handled == ["t0", "t1", "t2"]
    # Every attempt was the whole batch: a transient error is nobody's fault to single out.
    assert all(len(call) == 3 for call in handler.calls), handler.calls
    assert loop.dead_lettered == 0
    assert _sample("thirdring_consumer_errors_total", {"consumer": name, "kind": "transient"}) == 3
    assert _sample("thirdring_consumer_errors_total", {"consumer": name, "kind": "batch"}) == 0
    assert _sample("thirdring_consumer_records_total", {"consumer": name}) == 3
    assert _sample("thirdring_consumer_batch_size_count", {"consumer": name}) >= 1


async def test_stop_while_retrying_commits_nothing(
    broker: EmbeddedBroker, kafka_topics: dict[str, str], producer: AIOKafkaProducer
) -> None:
    from aiokafka.errors import KafkaConnectionError

    topic = kafka_topics["topic_raw"]
    group = f"g-{uuid.uuid4().hex[:8]}"
    await _send(producer, topic, raw("down0", AT).to_bytes())
    attempts: list[int] = []

    async def always_down(items: list[Item[RawMention]]) -> None:
        attempts.append(len(items))
        raise KafkaConnectionError("broker down for good")

    loop = _loop(broker, kafka_topics, producer, group, Recorder())
    loop.handle = always_down
    task = asyncio.create_task(loop.run())
    await wait_for(lambda: len(attempts) >= 2, timeout=30)
    loop.stop()
    await _finish(task)  # returns at once, without an exception, out of the retry's pause
    assert loop.dead_lettered == 0
    probe = AIOKafkaConsumer(
        bootstrap_servers=broker.bootstrap_servers, group_id=group, enable_auto_commit=False
    )
    await probe.start()
    try:
        assert await probe.committed(TopicPartition(topic, 0)) is None  # delivered again later
    finally:
        await probe.stop()


async def test_a_record_too_large_for_a_letter_is_dead_lettered_truncated(
    broker: EmbeddedBroker, kafka_topics: dict[str, str]
) -> None:
    """A record near the broker's limit makes a letter over it (base64 is 4/3 larger): the
    letter keeps the record's start and says so, and the consumer goes on."""
    big = b'{"text": "' + b"z" * 1_200_000 + b'"}'
    large = AIOKafkaProducer(
        bootstrap_servers=broker.bootstrap_servers, acks="all", max_request_size=4_000_000
    )
    await large.start()
    try:
        await large.send_and_wait(kafka_topics["topic_raw"], big, key=b"conv-1", partition=0)
        await large.send_and_wait(
            kafka_topics["topic_raw"], raw("after", AT).to_bytes(), key=b"conv-1", partition=0
        )
    finally:
        await large.stop()
    producer = make_producer(broker.bootstrap_servers)
    await producer.start()
    handler = Recorder()
    loop = _loop(broker, kafka_topics, producer, f"g-{uuid.uuid4().hex[:8]}", handler)
    try:
        await _run_until(loop, lambda: handler.handled == ["after"])
    finally:
        await producer.stop()
    records = await read_topic(
        broker.bootstrap_servers, kafka_topics["topic_dlq"], until=lambda rs: len(rs) >= 1
    )
    letter = DeadLetter.model_validate_json(records[0].value)
    assert letter.truncated and letter.original_size == len(big)
    assert letter.reason.startswith("invalid event") and letter.offset == 0
    original = base64.b64decode(letter.original_b64)
    assert big.startswith(original) and len(original) == shared.kafka.MAX_ORIGINAL_BYTES
    assert len(records[0].value) < shared.kafka.MAX_MESSAGE_BYTES


async def test_a_failed_commit_does_not_stop_the_consumer(
    broker: EmbeddedBroker, kafka_topics: dict[str, str], producer: AIOKafkaProducer
) -> None:
    """A commit refused because the group moved on (a rebalance) leaves the records to be
    delivered again; the consumer itself carries on."""
    from aiokafka.errors import CommitFailedError

    topic = kafka_topics["topic_raw"]
    handler = Recorder()
    name = f"commit-{uuid.uuid4().hex[:6]}"
    loop = _loop(broker, kafka_topics, producer, f"g-{uuid.uuid4().hex[:8]}", handler)
    loop.name = name
    real_commit = loop.consumer.commit
    refused: list[object] = []

    async def commit_once_refused(offsets: object = None) -> None:
        if not refused:
            refused.append(offsets)
            raise CommitFailedError("the group rebalanced")
        await real_commit(offsets)

    loop.consumer.commit = commit_once_refused  # type: ignore[method-assign]
    task = asyncio.create_task(loop.run())
    try:
        await _send(producer, topic, raw("c0", AT).to_bytes())
        await wait_for(lambda: handler.handled == ["c0"] and refused, timeout=30)
        await _send(producer, topic, raw("c1", AT).to_bytes())
        await wait_for(lambda: handler.handled == ["c0", "c1"], timeout=30)
        assert not task.done()
        # The loop reports what it holds and how far behind it is (about once a second).
        held = {"consumer": name}
        await wait_for(lambda: _sample("thirdring_consumer_assigned_partitions", held) == 1)
        lag = {"consumer": name, "topic": topic}
        await wait_for(lambda: _sample("thirdring_consumer_lag", lag) == 0)
    finally:
        loop.stop()
        await _finish(task)
    assert _sample("thirdring_consumer_errors_total", {"consumer": name, "kind": "commit"}) == 1
    assert _sample("thirdring_consumer_assigned_partitions", {"consumer": name}) == 0


async def test_lag_is_what_the_consumer_has_not_handled_yet(
    broker: EmbeddedBroker, kafka_topics: dict[str, str], producer: AIOKafkaProducer
) -> None:
    topic = kafka_topics["topic_raw"]
    await _send(producer, topic, *(raw(f"l{i}", AT).to_bytes() for i in range(6)))
    handler = Recorder()
    original = handler.__call__

    async def slow(items: list[Item[RawMention]]) -> None:
        await asyncio.sleep(0.4)
        await original(items)

    name = f"lag-{uuid.uuid4().hex[:6]}"
    loop = _loop(broker, kafka_topics, producer, f"g-{uuid.uuid4().hex[:8]}", handler)
    loop.name, loop.handle, loop.max_records = name, slow, 1  # one record per batch
    labels = {"consumer": name, "topic": topic}
    seen: list[float] = []

    def caught_up() -> bool:
        seen.append(_sample("thirdring_consumer_lag", labels))
        return len(handler.handled) == 6 and seen[-1] == 0

    await _run_until(loop, caught_up)
    # Behind by several records while it worked through them, never more than were sent.
    assert 2 <= max(seen) <= 5, seen
    assert _sample("thirdring_consumer_batch_size_sum", {"consumer": name}) == 6
    assert _sample("thirdring_consumer_batch_seconds_count", {"consumer": name}) == 6


async def test_a_service_started_before_the_broker_waits_for_it(tmp_path: Path) -> None:
    """A replica started while Kafka restarts waits for it instead of dying at start."""
    port = free_port()
    bootstrap = f"127.0.0.1:{port}"
    producer = make_producer(bootstrap)
    stop = asyncio.Event()
    starting = asyncio.create_task(connect("test producer", producer.start, stop))
    await asyncio.sleep(1.5)
    assert not starting.done()  # still trying, not failed
    late = EmbeddedBroker(tmp_path, port=port)
    await asyncio.to_thread(late.start)
    try:
        await asyncio.wait_for(starting, timeout=30)
        await ensure_topics(bootstrap, ["late-raw", "late-dlq"], partitions=1)
        await producer.send_and_wait("late-raw", raw("late", AT).to_bytes(), key=b"conv-1")
        handler = Recorder()
        loop = ConsumerLoop(
            name="late",
            bootstrap=bootstrap,
            topic="late-raw",
            group_id=f"g-{uuid.uuid4().hex[:8]}",
            parse=RawMention.model_validate_json,
            handle=handler,
            producer=producer,
            dlq_topic="late-dlq",
        )
        await _run_until(loop, lambda: handler.handled == ["late"])
    finally:
        await producer.stop()
        await asyncio.to_thread(late.stop)


async def test_waiting_for_the_broker_ends(tmp_path: Path) -> None:
    producer = make_producer(f"127.0.0.1:{free_port()}")
    try:
        with pytest.raises(KafkaConnectionError):
            await connect("test producer", producer.start, timeout=1.0)
        stop = asyncio.Event()
        stop.set()  # a SIGTERM while it waits: no more tries
        with pytest.raises(KafkaConnectionError):
            await asyncio.wait_for(connect("test producer", producer.start, stop), timeout=10)
    finally:
        await producer.stop()
