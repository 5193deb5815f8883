from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.ingest.publisher import Publisher
from services.ingest.sources.webhook import WEBHOOK_PATH, create_ingest_app
from shared.config import Settings
from shared.db.models import IngestedEvent
from shared.signing import SIGNATURE_HEADER, sign
from tests.ingest.helpers import consume, has_external_id, mention_dict, parse
from tests.live_server import live_server

SECRET = "test-webhook-secret"


def signed(body: bytes, secret: str = SECRET) -> dict[str, str]:
    return {SIGNATURE_HEADER: sign(body, secret), "content-type": "application/json"}


@pytest.fixture
async def client(publisher: Publisher) -> AsyncIterator[httpx.AsyncClient]:
    """The app under a real uvicorn server on a free loopback port."""
    async with (
        live_server(create_ingest_app(lambda: publisher, SECRET)) as base,
        httpx.AsyncClient(base_url=base, timeout=10) as c,
    ):
        yield c


async def _ingested(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return (await conn.execute(select(func.count()).select_from(IngestedEvent))).scalar_one()


async def test_signed_events_are_published_once(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    body = json.dumps(mention_dict("w1", conversation_id="conv-w")).encode()
    r = await client.post(WEBHOOK_PATH, content=body, headers=signed(body))
    assert r.status_code == 202 and r.json() == {"published": 1, "duplicates": 0}

    # A list; the sender retried w1 (a duplicate), w2 is new.
    body = json.dumps([mention_dict("w1", conversation_id="conv-w"), mention_dict("w2")]).encode()
    r = await client.post(WEBHOOK_PATH, content=body, headers=signed(body))
    assert r.status_code == 202 and r.json() == {"published": 1, "duplicates": 1}

    records = await consume(settings, has_external_id("w2"))
    assert sorted((parse(r).external_id, r.key) for r in records) == [
        ("w1", b"conv-w"),
        ("w2", b"test:w2"),
    ]
    assert (await client.get("/readyz")).json() == {"status": "ready"}
    assert (await client.get("/healthz")).status_code == 200


async def test_unsigned_or_wrongly_signed_bodies_are_refused(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    body = json.dumps(mention_dict("forged")).encode()
    bad_headers: list[dict[str, str | bytes]] = [
        {},
        signed(body, "another-secret"),
        {SIGNATURE_HEADER: sign(body, SECRET)[:-1] + "0"},
        {SIGNATURE_HEADER: "sha256=é".encode("latin-1")},  # not ASCII
    ]
    for headers in bad_headers:
        r = await client.post(WEBHOOK_PATH, content=body, headers=headers)
        assert r.status_code == 401, headers
        assert SIGNATURE_HEADER in r.json()["detail"]

    good = json.dumps(mention_dict("sentinel")).encode()
    assert (await client.post(WEBHOOK_PATH, content=good, headers=signed(good))).status_code == 202
    records = await consume(settings, has_external_id("sentinel"))
    assert [parse(r).external_id for r in records] == ["sentinel"]


async def test_malformed_bodies_are_422_and_nothing_is_ingested(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    no_author_id = mention_dict("bad") | {"author": {"handle": "x"}}
    cases = {
        b'{"source": "test",': "invalid JSON",
        json.dumps(no_author_id).encode(): "author.id",
        json.dumps([mention_dict("ok"), mention_dict("t", created_at="yesterday")]).encode(): (
            "[1] invalid event: created_at"
        ),
        b'"just a string"': "expected a JSON object",
        json.dumps(mention_dict("x") | {"colour": "red"}).encode(): "colour",
    }
    for body, expected in cases.items():
        r = await client.post(WEBHOOK_PATH, content=body, headers=signed(body))
        assert r.status_code == 422, body
        assert expected in r.json()["detail"], r.json()
    assert await _ingested(engine) == 0  # the valid first item of the list was not kept


async def test_body_over_one_mebibyte_is_413(client: httpx.AsyncClient) -> None:
    body = json.dumps(mention_dict("big", text="x" * (1024 * 1024))).encode()
    r = await client.post(WEBHOOK_PATH, content=body, headers=signed(body))
    assert r.status_code == 413

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted while reading
        for i in range(0, len(body), 65536):
            yield body[i : i + 65536]

    r = await client.post(WEBHOOK_PATH, content=chunks(), headers=signed(body))
    assert r.status_code == 413


async def test_without_secret_the_webhook_is_disabled() -> None:
    app = create_ingest_app(lambda: None, None)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as c:
        body = json.dumps(mention_dict("x")).encode()
        r = await c.post(WEBHOOK_PATH, content=body, headers=signed(body))
        assert r.status_code == 503
        assert r.json()["detail"] == "webhook disabled: set THIRDRING_WEBHOOK_SECRET"
        assert (await c.get("/healthz")).status_code == 200
        ready = await c.get("/readyz")
        assert ready.status_code == 503 and ready.json()["reason"] == "not started"


async def test_readyz_reports_a_stopped_producer(
    settings: Settings, engine: AsyncEngine, producer: object
) -> None:
    from shared.kafka import make_producer

    idle = make_producer(settings.kafka_bootstrap_servers)  # never started
    try:
        app = create_ingest_app(lambda: Publisher(settings, engine, idle), SECRET)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as c:
            r = await c.get("/readyz")
        assert r.status_code == 503 and "producer" in r.json()["reason"]
    finally:
        await idle.stop()
