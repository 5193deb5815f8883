"""The ingest worker: sources and the webhook publishing to ``mentions.raw``.

Each source runs as its own task; one that raises is logged and restarted with backoff
while the others go on. Stop order: sources, then the webhook server, then the producer
(flushed), so nothing accepted is left unsent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random

import uvicorn

from services.ingest.publisher import Publisher
from services.ingest.sources.base import Source
from services.ingest.sources.webhook import create_ingest_app
from shared.config import Settings
from shared.db.engine import make_engine
from shared.http import make_server
from shared.kafka import ensure_topics, make_producer

log = logging.getLogger(__name__)

BACKOFF_BASE = 1.0
BACKOFF_MAX = 60.0


def backoff_delay(attempt: int, base: float = BACKOFF_BASE, cap: float = BACKOFF_MAX) -> float:
    """Exponential backoff with full jitter, so restarted sources do not march in step."""
    return random.uniform(0, min(cap, base * 2 ** (attempt - 1)))


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)


async def run_source(
    source: Source,
    publisher: Publisher,
    stop: asyncio.Event,
    *,
    backoff_base: float | None = None,
) -> None:
    """Publish what ``source`` yields until it is exhausted or ``stop`` is set."""
    base = BACKOFF_BASE if backoff_base is None else backoff_base
    attempt = 0
    while not stop.is_set():
        stream = source.fetch()
        try:
            async for mention in stream:
                await publisher.publish([mention])
                attempt = 0  # it works again: the next failure starts the backoff afresh
                if stop.is_set():
                    return
            log.info("source %s finished", source.name)
            return
        except Exception:
            attempt += 1
            delay = backoff_delay(attempt, base)
            log.exception(
                "source %s failed (attempt %d); retrying in %.1fs", source.name, attempt, delay
            )
            await _sleep_unless(stop, delay)
        finally:
            # Close the generator now (its own finally blocks run), not at garbage collection.
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()


async def run_ingest(
    settings: Settings,
    *,
    sources: list[Source],
    stop: asyncio.Event,
    serve_webhook: bool = True,
) -> None:
    """Run until ``stop`` is set. The database must already be migrated."""
    if not settings.kafka_bootstrap_servers:
        raise ValueError("kafka_bootstrap_servers is empty: start the broker first")
    engine = make_engine(settings.resolved_database_url)
    producer = make_producer(settings.kafka_bootstrap_servers)
    publisher: Publisher | None = None
    server: uvicorn.Server | None = None
    tasks: list[asyncio.Task[None]] = []
    try:
        if serve_webhook:
            # Up before Kafka so /healthz answers and /readyz says "not started" meanwhile.
            secret = settings.webhook_secret.get_secret_value() if settings.webhook_secret else None
            app = create_ingest_app(lambda: publisher, secret)
            server, sock = make_server(
                app, settings.ingest_host, settings.ingest_port, "ingest webhook"
            )
            tasks.append(asyncio.create_task(server.serve(sockets=[sock]), name="ingest-webhook"))
            if secret is None:
                log.info("ingest webhook disabled: THIRDRING_WEBHOOK_SECRET is not set")
        await ensure_topics(
            settings.kafka_bootstrap_servers, [settings.topic_raw], settings.partitions
        )
        await producer.start()
        publisher = Publisher(settings, engine, producer)
        source_tasks = [
            asyncio.create_task(run_source(s, publisher, stop), name=f"source-{s.name}")
            for s in sources
        ]
        tasks.extend(source_tasks)
        log.info("ingest running: sources %s", [s.name for s in sources] or "none")
        await stop.wait()
    finally:
        await _shutdown(tasks, server)
        publisher = None
        with contextlib.suppress(Exception):
            await producer.flush()
        await producer.stop()
        await engine.dispose()
        log.info("ingest stopped")


async def _shutdown(tasks: list[asyncio.Task[None]], server: uvicorn.Server | None) -> None:
    web = [t for t in tasks if t.get_name() == "ingest-webhook"]
    for task in tasks:
        if task not in web:
            task.cancel()  # sources sit in sleeps and network waits: cancel is the stop
    if server is not None:
        server.should_exit = True
    results = await asyncio.gather(*tasks, return_exceptions=True)
    for task, result in zip(tasks, results, strict=True):
        if isinstance(result, Exception):
            log.error("%s ended with %r", task.get_name(), result)
