"""The classify service: mentions.raw -> scores -> mentions.scored.

The model runs in a worker thread so the consumer keeps heart-beating while a batch is
scored; a whole Kafka batch is scored in one encoder pass (batching by length inside).
Offsets are committed only after the scored events are acknowledged by the broker.
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaProducer

from services.classify.scoring import Classifier
from shared.config import Settings
from shared.events import RawMention, ScoredMention
from shared.health import create_health_app
from shared.http import serve
from shared.kafka import ConsumerLoop, Item, ensure_topics, make_producer
from shared.lifecycle import supervise

log = logging.getLogger(__name__)


def scored_handler(classifier: Classifier, producer: AIOKafkaProducer, topic: str):  # type: ignore[no-untyped-def]
    async def handle(items: list[Item[RawMention]]) -> None:
        mentions = [item.value for item in items]
        scores = await asyncio.to_thread(classifier.score, [(m.text, m.author) for m in mentions])
        futures = [
            await producer.send(topic, ScoredMention(mention=m, scores=s).to_bytes(), key=m.key)
            for m, s in zip(mentions, scores, strict=True)
        ]
        await asyncio.gather(*futures)

    return handle


async def run_classify(
    settings: Settings,
    stop: asyncio.Event,
    classifier: Classifier | None = None,
    *,
    serve_health: bool = True,
) -> None:
    classifier = classifier or await asyncio.to_thread(
        Classifier.load, settings.model_dir, None, settings.classify_threads
    )
    producer = make_producer(settings.kafka_bootstrap_servers)
    await producer.start()
    await ensure_topics(
        settings.kafka_bootstrap_servers,
        [settings.topic_raw, settings.topic_scored, settings.topic_dlq],
        settings.partitions,
    )
    consumer = ConsumerLoop[RawMention](
        name="classify",
        bootstrap=settings.kafka_bootstrap_servers,
        topic=settings.topic_raw,
        group_id=settings.group("classify"),
        parse=RawMention.model_validate_json,
        handle=scored_handler(classifier, producer, settings.topic_scored),
        producer=producer,
        dlq_topic=settings.topic_dlq,
        max_records=settings.classify_batch_size,
    )
    tasks = [asyncio.create_task(consumer.run(), name="classify-consumer")]
    if serve_health:

        async def consuming() -> bool:
            return consumer.ready.is_set()

        app = create_health_app("classify", {"consumer": consuming})
        server = serve(app, settings.classify_host, settings.classify_port, stop, "classify health")
        tasks.append(asyncio.create_task(server, name="classify-health"))
    log.info("classify service running (model %s)", classifier.model_version)
    try:
        await supervise(tasks, stop)
    finally:
        consumer.stop()
        await asyncio.gather(*tasks, return_exceptions=True)
        await producer.stop()
