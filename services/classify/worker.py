"""The classify service: mentions.raw -> scores -> mentions.scored.

Batching is dynamic: each ``getmany`` returns whatever has arrived, up to
``THIRDRING_CLASSIFY_BATCH_SIZE`` records (a lone post is scored at once; a backlog is taken
in full batches, and posts that arrive while a batch is scored form the next one).
``THIRDRING_CLASSIFY_MAX_WAIT_MS`` is how long a poll waits when nothing is there.

A batch is scored in one model call (the encoder sorts it by token length and runs length
buckets on every core), then its events are sent in consumption order (so the order per
conversation key is kept), and the offsets are committed only after every scored event of the
batch is acknowledged by the broker (the handler awaits all acks before it returns, and
``ConsumerLoop`` commits after it). Overlapping the model with the producer (scoring chunk
k+1 while chunk k is sent) was measured and dropped: the model is busy ~94% of the time
anyway, and cutting a batch into chunks costs more in padding than the overlap gains
(2,000 posts, batches of 256: 306 posts/s unchunked, 224 in chunks of 64).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaProducer

from services.classify.scoring import Classifier
from services.classify.urgency import waited_before_seen
from shared import consumer_metrics
from shared.config import Settings
from shared.events import RawMention, ScoredMention
from shared.health import create_health_app
from shared.http import serve
from shared.kafka import ConsumerLoop, Item, connect, ensure_topics, make_producer
from shared.lifecycle import supervise

log = logging.getLogger(__name__)

MAX_WAIT_ENV = "THIRDRING_CLASSIFY_MAX_WAIT_MS"
DEFAULT_MAX_WAIT_MS = 200


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


def scored_handler(
    classifier: Classifier, producer: AIOKafkaProducer, topic: str
) -> Callable[[list[Item[RawMention]]], Awaitable[None]]:
    """Score a consumed batch in one model call, produce it in order, await every ack."""

    async def handle(items: list[Item[RawMention]]) -> None:
        mentions = [item.value for item in items]
        scores = await asyncio.to_thread(
            classifier.score,
            [(m.text, m.author) for m in mentions],
            [
                waited_before_seen(m.created_at, m.ingested_at, backfill=m.backfill)
                for m in mentions
            ],
        )
        acks = [
            await producer.send(topic, ScoredMention(mention=m, scores=s).to_bytes(), key=m.key)
            for m, s in zip(mentions, scores, strict=True)
        ]
        await asyncio.gather(*acks)

    return handle


def health_info(classifier: Classifier) -> dict[str, Any]:
    """What ``/healthz`` and ``/readyz`` say about the loaded model."""
    encoder = classifier.encoder
    return {
        "model_version": classifier.model_version,
        "encoder_backend": getattr(encoder, "backend", "torch"),
        "encoder_threads": getattr(encoder, "threads", None),
    }


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
    await connect("classify producer", producer.start, stop)
    await connect(
        "classify topics",
        lambda: ensure_topics(
            settings.kafka_bootstrap_servers,
            [settings.topic_raw, settings.topic_scored, settings.topic_dlq],
            settings.partitions,
        ),
        stop,
    )
    max_wait_ms = _env_int(MAX_WAIT_ENV, DEFAULT_MAX_WAIT_MS)
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
        timeout_ms=max_wait_ms,
    )
    tasks = [asyncio.create_task(consumer.run(), name="classify-consumer")]
    info = health_info(classifier)
    if serve_health:

        async def consuming() -> bool:
            return consumer.ready.is_set()

        app = create_health_app(
            "classify",
            {"consumer": consuming},
            info=info,
            metrics=consumer_metrics.render_with_process,
        )
        server = serve(app, settings.classify_host, settings.classify_port, stop, "classify health")
        tasks.append(asyncio.create_task(server, name="classify-health"))
    log.info(
        "classify service running (model %s, backend %s, batch %d, wait %d ms)",
        classifier.model_version,
        info["encoder_backend"],
        settings.classify_batch_size,
        max_wait_ms,
    )
    try:
        await supervise(tasks, stop)
    finally:
        consumer.stop()
        await asyncio.gather(*tasks, return_exceptions=True)
        await producer.stop()
