from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from services.ingest import worker
from services.ingest.sources.base import Source
from services.ingest.sources.demo import DemoSource
from services.ingest.sources.webhook import WEBHOOK_PATH
from services.ingest.worker import run_ingest
from shared.config import Settings
from shared.events import RawMention
from shared.ports import free_port
from shared.signing import SIGNATURE_HEADER, sign
from tests.ingest.helpers import consume, mention, mention_dict, parse

SECRET = "worker-secret"


class FlakySource(Source):
    """Fails on its first round, then yields one post: the worker must retry it."""

    name = "flaky"
    fingerprint_fields = ("id",)

    def __init__(self) -> None:
        self.rounds = 0

    async def fetch(self) -> AsyncIterator[RawMention]:
        self.rounds += 1
        if self.rounds == 1:
            raise ConnectionError("upstream 503")
        yield mention(self.external_id({"id": "f1"}), source="flaky")


async def _wait_ready(client: httpx.AsyncClient) -> None:
    async with asyncio.timeout(15):
        while True:
            try:
                if (await client.get("/readyz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass  # not listening yet
            await asyncio.sleep(0.05)


async def test_run_ingest_runs_sources_and_webhook_and_stops_cleanly(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(worker, "BACKOFF_BASE", 0.05)
    port = free_port()
    cfg = settings.model_copy(update={"ingest_port": port, "webhook_secret": SecretStr(SECRET)})
    flaky, demo = FlakySource(), DemoSource(speed=30)
    stop = asyncio.Event()
    task = asyncio.create_task(run_ingest(cfg, sources=[flaky, demo], stop=stop))

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        await _wait_ready(client)
        body = json.dumps(mention_dict("hook-1")).encode()
        r = await client.post(
            WEBHOOK_PATH, content=body, headers={SIGNATURE_HEADER: sign(body, SECRET)}
        )
        assert r.status_code == 202 and r.json()["published"] == 1

        records = await consume(cfg, lambda rs: len(rs) >= 9)  # 7 demo + flaky + webhook
        by_source: dict[str, list[RawMention]] = {}
        for rec in records:
            by_source.setdefault(parse(rec).source, []).append(parse(rec))
        assert {k: len(v) for k, v in by_source.items()} == {"demo": 7, "flaky": 1, "test": 1}
        assert flaky.rounds == 2  # failed once, retried, the demo went on meanwhile

        stop.set()
        await asyncio.wait_for(task, 15)
        assert task.exception() is None
        with pytest.raises(httpx.ConnectError):  # the webhook server is gone
            await client.get("/healthz")


async def test_run_ingest_refuses_an_empty_bootstrap(tmp_path: Path) -> None:
    cfg = Settings(kafka_bootstrap_servers="", data_dir=tmp_path)
    with pytest.raises(ValueError, match="broker"):
        await run_ingest(cfg, sources=[], stop=asyncio.Event())
