"""The classify worker under a burst, on a real Tansu broker: once each, in order, DLQ."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections import defaultdict
from datetime import timedelta
from pathlib import Path

import httpx

from services.classify.scoring import Classifier
from services.classify.worker import run_classify
from shared.broker import EmbeddedBroker
from shared.config import Settings
from shared.events import Author, DeadLetter, RawMention, ScoredMention, utcnow
from shared.kafka import ensure_topics, make_producer
from shared.ports import free_port
from tests.kafka_reader import read_topic, wait_for

THIRDRING = Path(sys.executable).parent / "thirdring"

TEXTS = [
    "My order never arrived and support does not answer, I want a refund",
    "Il servizio non funziona da tre giorni!",
    "Thanks for the quick help 🙏",
    "Internet ei tööta juba kaks päeva.",
    "El pedido llegó roto y nadie responde. Es la tercera vez que escribo y nadie me ayuda.",
    "ok",
]


async def test_burst_scored_once_in_order_with_dead_letter(
    broker: EmbeddedBroker, topics: dict[str, str], classifier: Classifier, tmp_path: Path
) -> None:
    settings = Settings(
        data_dir=tmp_path / "var",
        kafka_bootstrap_servers=broker.bootstrap_servers,
        partitions=3,
        consumer_group_prefix=f"test-{uuid.uuid4().hex[:6]}",
        classify_port=free_port(),
        classify_batch_size=32,  # several batches, each scored in one model call
        **topics,
    )
    await ensure_topics(
        broker.bootstrap_servers,
        [settings.topic_raw, settings.topic_scored, settings.topic_dlq],
        settings.partitions,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(run_classify(settings, stop, classifier))
    producer = make_producer(broker.bootstrap_servers)
    await producer.start()
    try:
        async with httpx.AsyncClient() as client:
            base = f"http://127.0.0.1:{settings.classify_port}"

            async def ready() -> bool:
                try:
                    return (await client.get(f"{base}/readyz")).status_code == 200
                except httpx.HTTPError:
                    return False

            await wait_for(ready, timeout=30)
            health = (await client.get(f"{base}/healthz")).json()
            readyz = (await client.get(f"{base}/readyz")).json()
        for body in (health, readyz):
            assert body["model_version"] == classifier.model_version
            assert body["encoder_backend"] == classifier.encoder.backend

        now = utcnow()
        sent: dict[str, list[str]] = defaultdict(list)
        acks = []
        for i in range(200):
            conv = f"conv-{i % 7}"
            mention = RawMention(
                source="test",
                external_id=f"m{i}",
                conversation_id=conv,
                brand="acme",
                author=Author(id=f"u{i % 13}"),
                text=TEXTS[i % len(TEXTS)] + f" #{i}",
                # Every tenth post reached us three hours late (a slow poll, say).
                created_at=now - timedelta(hours=3) if i % 10 == 0 else now,
                ingested_at=now,
            )
            sent[conv].append(mention.external_id)
            acks.append(
                await producer.send(settings.topic_raw, mention.to_bytes(), key=mention.key)
            )
            if i == 100:  # a malformed record in the middle of the burst
                bad = b'{"source": "test", "text": "no ids"}'
                acks.append(await producer.send(settings.topic_raw, bad, key=b"conv-3"))
        await asyncio.gather(*acks)

        records = await read_topic(
            broker.bootstrap_servers, settings.topic_scored, lambda r: len(r) >= 200, timeout=60
        )
        letters = await read_topic(
            broker.bootstrap_servers, settings.topic_dlq, lambda r: len(r) >= 1, timeout=10
        )
    finally:
        stop.set()
        await asyncio.gather(task, return_exceptions=True)
        await producer.stop()

    scored = [ScoredMention.model_validate_json(r.value) for r in records]
    ids = [s.mention.external_id for s in scored]
    assert len(ids) == 200 and len(set(ids)) == 200  # every message scored exactly once
    got: dict[str, list[str]] = defaultdict(list)
    for s in scored:  # read_topic keeps each partition's order; a key lives in one partition
        got[s.mention.conversation_id].append(s.mention.external_id)
        assert s.scores.model_version == classifier.model_version
    assert got == sent
    for s in scored:
        late = int(s.mention.external_id[1:]) % 10 == 0
        assert ("waited 3 h before seen" in s.scores.urgency.reasons) is late, s.scores.urgency
    assert len(letters) == 1
    letter = DeadLetter.model_validate_json(letters[0].value)
    assert letter.stage == "classify" and letter.key == "conv-3"
    assert_offline_agrees(scored)


def assert_offline_agrees(scored: list[ScoredMention]) -> None:
    """`thirdring classify` (the offline path) scores the same posts as the service did.

    Both run ``Classifier.score`` but on different batches (the service's come from the
    broker in batches of 32, the command's from a file in batches of 64); the int8 encoder's
    activation scales are constants, so every score and label is the same. (With run-time
    scales a probability moved by up to 0.24 with its batch-mates and about 5% of labels
    differed.)
    """
    lines = [
        json.dumps(
            {
                "id": s.mention.external_id,
                "text": s.mention.text,
                "author": s.mention.author.model_dump(mode="json"),
                "created_at": s.mention.created_at.isoformat(),
                "ingested_at": s.mention.ingested_at.isoformat(),
            }
        )
        for s in scored
    ]
    done = subprocess.run(
        [str(THIRDRING), "classify", "--input", "-", "--output", "-"],
        input="\n".join(lines) + "\n",
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    offline = {o["id"]: o for o in map(json.loads, done.stdout.splitlines())}
    assert len(offline) == len(scored)
    for s in scored:
        o = offline[s.mention.external_id]
        assert o["model_version"] == s.scores.model_version
        assert o["lang"] == s.scores.lang
        for label, p in s.scores.sentiment.scores.items():
            assert abs(o["sentiment"]["scores"][label] - p) < 1e-4, (s.mention.text, o)
        assert abs(o["complaint"]["score"] - s.scores.complaint.score) < 1e-4
        assert o["sentiment"]["label"] == s.scores.sentiment.label, s.mention.text
        assert o["complaint"]["is_complaint"] == s.scores.complaint.is_complaint, s.mention.text
        assert o["urgency"]["level"] == s.scores.urgency.level, s.mention.text
        assert o["urgency"]["reasons"] == s.scores.urgency.reasons, s.mention.text
        assert abs(o["urgency"]["score"] - s.scores.urgency.score) < 1e-3, s.mention.text
