"""Two classify replicas as separate processes share ``mentions.raw``; one is killed -9
mid-way and the other takes over its partitions.

Every post must still be scored (at least once: the killed replica's last, uncommitted
batch is scored again by the survivor, so a few duplicates on ``mentions.scored`` are
within the at-least-once bound), and the alert side, which keeps the first copy of an event
and drops the others, must end with every post stored once, every case as its conversation
makes it, and every due notification delivered once.

On Tansu in memory (the session broker): this is about the consumer group, not storage.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from pathlib import Path

import pytest
from aiokafka import ConsumerRecord

from shared.broker import EmbeddedBroker
from shared.db.engine import make_engine
from shared.events import utcnow
from shared.kafka import ensure_topics, make_producer
from tests.conftest import POSTGRES_URL
from tests.e2e import outcomes
from tests.e2e.fault_plan import make_plan
from tests.procs import (
    Pipeline,
    database,
    held_partitions,
    metric,
    service_env,
    wait_split,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]

N_POSTS = 2000
PARTITIONS = 12
BATCH = 128  # classify's batch: the most a killed replica can leave uncommitted
SECRET = "scaling-notify-secret"
FAST_TARGET = 12.0  # no outage to outlast here: the alerts fall due within ~20 s


async def redeliver(bootstrap: str, records: list[ConsumerRecord]) -> int:
    producer = make_producer(bootstrap)
    await producer.start()
    try:
        for r in records:
            await producer.send_and_wait(r.topic, r.value, key=r.key)
    finally:
        await producer.stop()
    return len(records)


async def test_two_classifiers_one_killed_every_post_scored_and_cased_once(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    run = outcomes.Run(seed=0)
    suffix = uuid.uuid4().hex[:8]
    topics = {f"THIRDRING_TOPIC_{t.upper()}": f"{t}-{suffix}" for t in ("raw", "scored", "dlq")}
    await ensure_topics(broker.bootstrap_servers, list(topics.values()), PARTITIONS)
    target = outcomes.Target()
    try:
        async with database(POSTGRES_URL or None, tmp_path) as db_url:
            env = service_env(
                broker.bootstrap_servers,
                db_url,
                tmp_path,
                THIRDRING_PARTITIONS=str(PARTITIONS),
                THIRDRING_CONSUMER_GROUP_PREFIX=f"scaling-{suffix}",
                **outcomes.alerting_env(tmp_path, target, SECRET, FAST_TARGET),
                THIRDRING_CLASSIFY_BATCH_SIZE=str(BATCH),
                # Two replicas on two cores: one encoder thread each.
                THIRDRING_CLASSIFY_THREADS="1",
                **topics,
            )
            pipeline = Pipeline(tmp_path, env)
            alert = pipeline.add("alert", "run", "alert", "--no-api", port_var="THIRDRING_API_PORT")
            first, second = (
                pipeline.add(f"classify-{i}", "run", "classify", port_var="THIRDRING_CLASSIFY_PORT")
                for i in (1, 2)
            )
            replay = pipeline.add("replay", "replay", str(tmp_path / "posts.jsonl"))
            engine = make_engine(db_url)
            try:
                with pipeline.running():
                    await pipeline.start(alert, first, second)
                    # Both replicas in the group, the partitions split between them.
                    await wait_split([first, second], "classify", PARTITIONS, timeout=90)
                    split = await held_partitions([first, second], "classify")
                    run.note(f"partitions held: {split}")

                    plan = make_plan(N_POSTS, utcnow(), webhook_share=0.0, fast_target=FAST_TARGET)
                    (tmp_path / "posts.jsonl").write_text("\n".join(plan.lines) + "\n")
                    replay.start()
                    total = len(plan.posts)

                    async def consumed() -> float:
                        name = "thirdring_consumer_records_total"
                        counts = [
                            await metric(p, name, consumer="classify") for p in (first, second)
                        ]
                        return sum(c or 0.0 for c in counts)

                    # Mid-way through classify's work (it runs well ahead of alert).
                    await outcomes.wait_until(
                        lambda: outcomes.at_least(consumed(), 0.3 * total),
                        pipeline,
                        run,
                        "30%",
                        180,
                    )
                    second.kill()
                    run.note(f"kill -9 classify-2 after {await consumed():.0f} records consumed")
                    # The survivor gets the dead replica's partitions once its session ends.
                    await wait_split([first], "classify", PARTITIONS, timeout=90)
                    run.note("classify-1 holds every partition")
                    await outcomes.wait_until(
                        lambda: outcomes.at_least(outcomes.stored(engine), total),
                        pipeline,
                        run,
                        "all stored",
                        240,
                    )
                    expected = plan.expected_notifications()

                    def delivered() -> bool:
                        got = {
                            (r.json()["case"]["conversation_id"], r.json()["stage_id"])
                            for r in target.requests()
                        }
                        return expected <= got

                    await outcomes.wait_until(delivered, pipeline, run, "notifications", 180)
                    scored_topic = topics["THIRDRING_TOPIC_SCORED"]
                    scored = await outcomes.read_all(broker.bootstrap_servers, scored_topic)
                    # What at-least-once can bring: every tenth scored event once more
                    # (those of breached cases included). Alert must keep the first copies.
                    again = await redeliver(broker.bootstrap_servers, scored[::10])
                    run.note(f"{again} scored events delivered again")

                    async def alert_consumed() -> bool:
                        n = await metric(
                            alert, "thirdring_consumer_records_total", consumer="alert"
                        )
                        return (n or 0) >= len(scored) + again

                    await outcomes.wait_until(alert_consumed, pipeline, run, "copies consumed", 60)
                    await asyncio.sleep(1.0)  # time for a late duplicate, were there one
                    codes = pipeline.stop()
            finally:
                await engine.dispose()

            await outcomes.check_database(db_url, plan, run)
    finally:
        target.stop()

    assert codes == {"alert": 0, "classify-1": 0}, codes
    assert split[0] > 0 and split[1] > 0 and sum(split) == PARTITIONS
    copies = Counter(json.loads(r.value)["mention"]["event_id"] for r in scored)
    # No loss: every post scored. Duplicates: at most the killed replica's uncommitted
    # batch, and a batch the survivor was scoring on a partition it lost in a rebalance.
    assert set(copies) == {p.event_id for p in plan.posts}
    duplicates = sum(copies.values()) - len(copies)
    run.note(f"scored {sum(copies.values())} events for {len(copies)} posts")
    assert duplicates <= 2 * BATCH, duplicates
    outcomes.check_notifications(target, plan, SECRET, max_copies=0, run=run)
