"""SIGTERM (what Kubernetes and Compose send) stops a busy classify replica cleanly: the
batch in hand is finished and its offsets committed, and the process exits 0. So a rolling
update or a scale-down repeats no work: the next replica starts exactly where this one
stopped, and every post is scored exactly once. (That the consumer leaves its group on the
way out is checked against the broker in tests/shared/test_consumer_loop.py.)"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from bench.pipeline import sample_texts
from bench.scaling import mentions
from shared.broker import EmbeddedBroker
from shared.kafka import ensure_topics, make_producer
from tests.e2e.outcomes import read_all
from tests.kafka_reader import wait_for
from tests.procs import Pipeline, metric, service_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

N_POSTS = 1500
PARTITIONS = 4


async def committed(bootstrap: str, group: str, topic: str) -> int:
    probe = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await probe.start()
    try:
        return sum(
            [await probe.committed(TopicPartition(topic, p)) or 0 for p in range(PARTITIONS)]
        )
    finally:
        await probe.stop()


async def test_sigterm_finishes_the_batch_and_commits_so_nothing_is_done_twice(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    suffix = uuid.uuid4().hex[:8]
    raw, scored = f"raw-{suffix}", f"scored-{suffix}"
    group_prefix = f"stop-{suffix}"
    group = f"{group_prefix}-classify"
    await ensure_topics(broker.bootstrap_servers, [raw, scored, f"dlq-{suffix}"], PARTITIONS)
    env = service_env(
        broker.bootstrap_servers,
        f"sqlite+aiosqlite:///{tmp_path / 'unused.db'}",
        tmp_path,
        THIRDRING_PARTITIONS=str(PARTITIONS),
        THIRDRING_TOPIC_RAW=raw,
        THIRDRING_TOPIC_SCORED=scored,
        THIRDRING_TOPIC_DLQ=f"dlq-{suffix}",
        THIRDRING_CONSUMER_GROUP_PREFIX=group_prefix,
        THIRDRING_CLASSIFY_BATCH_SIZE="64",  # many batches: the stop lands in the middle
    )
    pipeline = Pipeline(tmp_path, env)
    first = pipeline.add("classify-1", "run", "classify", port_var="THIRDRING_CLASSIFY_PORT")
    second = pipeline.add("classify-2", "run", "classify", port_var="THIRDRING_CLASSIFY_PORT")
    posts = mentions(sample_texts(N_POSTS), "stop")
    with pipeline.running():
        await pipeline.start(first)
        producer = make_producer(broker.bootstrap_servers)
        await producer.start()
        try:
            for m in posts:
                await producer.send(raw, m.to_bytes(), key=m.key)
            await producer.flush()
        finally:
            await producer.stop()

        async def busy() -> bool:
            done = await metric(first, "thirdring_consumer_records_total", consumer="classify")
            return (done or 0) >= N_POSTS // 4

        await wait_for(busy, timeout=120)
        code = first.terminate(timeout=30)
        log = first.log.read_text()
        at_stop = await read_all(broker.bootstrap_servers, scored)
        offsets = await committed(broker.bootstrap_servers, group, raw)

        await pipeline.start(second)  # the next replica (a rolling update) takes over

        async def all_scored() -> bool:
            return len(await read_all(broker.bootstrap_servers, scored)) >= N_POSTS

        await wait_for(all_scored, timeout=180)
        await asyncio.sleep(1.0)  # time for a duplicate to show up, were there one
        assert second.terminate(timeout=30) == 0

    assert code == 0 and "classify stopped" in log, first.tail()
    assert "not committed" not in log and "Traceback" not in log
    # It stopped in the middle, with every record it took scored and committed...
    assert 0 < len(at_stop) < N_POSTS
    assert offsets == len(at_stop)
    ids = [
        json.loads(r.value)["mention"]["event_id"]
        for r in await read_all(broker.bootstrap_servers, scored)
    ]
    # The second replica started where the first stopped: each post scored exactly once.
    assert sorted(ids) == sorted(m.event_id for m in posts)
