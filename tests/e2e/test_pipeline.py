"""A customer post travels ingest -> Tansu -> classify -> Tansu -> alert, on real parts.

Posts enter through a replayed file and through the signed webhook; a real HTTP server on
loopback receives the alerts; the case is answered by the brand's reply; the stats endpoint
reports the figures. Runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from services.alert.access import create_token
from services.alert.sla.policies import SlaPolicy
from services.alert.worker import run_alert
from services.classify.scoring import Classifier
from services.classify.worker import run_classify
from services.ingest.publisher import Publisher
from services.ingest.sources.replay import replay_file
from services.ingest.worker import run_ingest
from shared.config import Settings
from shared.db.engine import make_engine, make_sessionmaker
from shared.events import DeadLetter, utcnow
from shared.kafka import ensure_topics, make_producer
from shared.ports import free_port
from shared.signing import sign
from tests.http_receiver import HttpReceiver
from tests.kafka_reader import read_topic, wait_for

pytestmark = pytest.mark.slow

SECRET = "webhook-test-secret"
# Every priority has a short target so the test does not depend on the exact urgency level.
POLICY = SlaPolicy(targets={"P1": 6, "P2": 7, "P3": 8, "P4": 9}, warn_at_fraction=0.5)


@pytest.fixture
async def pipeline(
    settings: Settings, receiver: HttpReceiver, classifier: Classifier, tmp_path: Path
) -> AsyncIterator[tuple[Settings, str]]:
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(json.dumps({"policies": [POLICY.model_dump()]}))  # JSON is YAML
    s = settings.model_copy(
        update={
            "api_port": free_port(),
            "ingest_port": free_port(),
            "classify_port": free_port(),
            "webhook_secret": SecretStr(SECRET),
            "notify_webhook_url": receiver.url,
            "notify_webhook_secret": SecretStr("notify-secret"),
            "alerting_file": policy_file,
            "scheduler_interval": 0.1,
            "outbox_interval": 0.1,
        }
    )
    await ensure_topics(
        s.kafka_bootstrap_servers, [s.topic_raw, s.topic_scored, s.topic_dlq], s.partitions
    )
    engine = make_engine(s.resolved_database_url)
    async with make_sessionmaker(engine)() as session, session.begin():
        token = await create_token(session, "e2e", "viewer")
    await engine.dispose()
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(run_ingest(s, sources=[], stop=stop)),
        asyncio.create_task(run_classify(s, stop, classifier)),
        asyncio.create_task(run_alert(s, stop)),
    ]
    # Every service answers health checks; all three ready means consumers have joined.
    ports = (s.api_port, s.ingest_port, s.classify_port)
    async with httpx.AsyncClient() as client:

        async def ready() -> bool:
            try:
                codes = [
                    (await client.get(f"http://127.0.0.1:{p}/readyz")).status_code for p in ports
                ]
            except httpx.HTTPError:
                return False
            return codes == [200, 200, 200]

        await wait_for(ready, timeout=60)
    yield s, token
    stop.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert not [r for r in results if isinstance(r, BaseException)], results


def _post(ext: str, at, text: str, *, conv: str, brand: bool = False) -> dict:  # type: ignore[no-untyped-def]
    return {
        "source": "e2e",
        "external_id": ext,
        "conversation_id": conv,
        "brand": "acme",
        "author": {"id": "acme" if brand else f"cust-{ext}", "followers": 1200},
        "is_brand": brand,
        "text": text,
        "url": f"https://social.example/{ext}",
        "created_at": at.isoformat(),
    }


async def test_post_to_alert_end_to_end(
    pipeline: tuple[Settings, str], receiver: HttpReceiver, tmp_path: Path
) -> None:
    s, token = pipeline
    now = utcnow()
    angry = "My internet has been down for three days and nobody answers. I want a refund now!"
    lines = [
        json.dumps(_post("a1", now, angry, conv="conv-a")),
        "{this line is broken",
        json.dumps(
            _post("b1", now, "Il servizio non funziona, voglio un rimborso!", conv="conv-b")
        ),
        json.dumps(
            _post(
                "b2",
                now + timedelta(seconds=2),
                "Ci scusiamo, ti scriviamo ora.",
                conv="conv-b",
                brand=True,
            )
        ),
    ]
    replay = tmp_path / "posts.jsonl"
    replay.write_text("\n".join(lines) + "\n")

    engine = make_engine(s.resolved_database_url)
    producer = make_producer(s.kafka_bootstrap_servers)
    await producer.start()
    try:
        report = await replay_file(replay, None, Publisher(s, engine, producer), progress=False)
        # A malformed record straight on the topic: the classifier must dead-letter it and go on.
        await producer.send_and_wait(s.topic_raw, b'{"not": "a mention"}', key=b"conv-x")
    finally:
        await producer.stop()
        await engine.dispose()
    assert report.published == 3
    assert [e.line for e in report.errors] == [2]

    ingest = f"http://127.0.0.1:{s.ingest_port}/api/v1/ingest/webhook"
    body = json.dumps(
        _post("c1", now, "Ei tööta! Internet on maas juba kaks päeva.", conv="conv-c")
    ).encode()
    async with httpx.AsyncClient(timeout=10) as client:
        bad = await client.post(
            ingest, content=body, headers={"X-Thirdring-Signature": "sha256=00"}
        )
        assert bad.status_code == 401
        good = await client.post(
            ingest, content=body, headers={"X-Thirdring-Signature": sign(body, SECRET)}
        )
        assert good.status_code == 202, good.text

        def stages_for(conv: str) -> list[str]:
            return [
                r.json()["stage"]
                for r in receiver.requests
                if r.json()["case"]["conversation_id"] == conv
            ]

        # conv-a is never answered: a warning, then a breach, each exactly once.
        await wait_for(lambda: stages_for("conv-a") == ["warning", "breach"], timeout=60)
        await wait_for(lambda: stages_for("conv-c") == ["warning", "breach"], timeout=60)
        api = f"http://127.0.0.1:{s.api_port}"
        assert (await client.get(f"{api}/api/v1/cases")).status_code == 401  # no token
        client.headers["Authorization"] = f"Bearer {token}"
        cases = {
            c["conversation_id"]: c
            for c in (await client.get(f"{api}/api/v1/cases?status=all")).json()
        }
        stats = (await client.get(f"{api}/api/v1/stats/response-times")).json()
        bad_range = await client.get(
            f"{api}/api/v1/stats/response-times",
            params={"since": "2026-11-02T00:00:00Z", "until": "2026-11-01T00:00:00Z"},
        )

    assert set(cases) == {"conv-a", "conv-b", "conv-c"}
    assert cases["conv-b"]["status"] == "answered" and not cases["conv-b"]["breached"]
    assert cases["conv-b"]["reply_url"] == "https://social.example/b2"
    assert cases["conv-a"]["status"] == "open" and cases["conv-a"]["breached"]
    assert stages_for("conv-b") == []  # answered in time: nobody paged
    assert stats["cases"] == 3 and stats["answered"] == 1 and stats["breaches"] == 2
    assert stats["first_response_seconds"]["p50"] == pytest.approx(2.0)
    assert stats["within_target_ratio"] == pytest.approx(1 / 3)
    assert bad_range.status_code == 422 and "since" in bad_range.text

    first = receiver.requests[0]
    payload = first.json()
    assert payload["post"]["text"] in (angry, json.loads(body)["text"])
    assert payload["post"]["lang"] in ("en", "et")

    letters = await read_topic(s.kafka_bootstrap_servers, s.topic_dlq, lambda r: len(r) >= 1)
    assert len(letters) == 1
    letter = DeadLetter.model_validate_json(letters[0].value)
    assert letter.stage == "classify" and "source" in letter.reason
