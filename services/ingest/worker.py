"""The ingest worker: sources, polled connectors and the webhook publishing to
``mentions.raw``.

Each source runs as its own task; one that raises is logged and restarted with backoff
while the others go on. Polled connectors (``HttpSource``, from the listening file) run in
a ``Poller`` each, with cursors in the database and health on ``/health`` and ``/metrics``.
Stop order: sources, then the webhook server, then the producer (flushed), so nothing
accepted is left unsent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Sequence

import uvicorn

from services.ingest.cursors import CursorStore
from services.ingest.listening import build_sources, load_listening
from services.ingest.metrics import observe_lag
from services.ingest.poller import Poller
from services.ingest.publisher import Publisher
from services.ingest.sources.base import Source
from services.ingest.sources.http import HttpSource
from services.ingest.sources.webhook import create_ingest_app
from shared.config import Settings
from shared.db.engine import make_engine
from shared.http import make_server
from shared.kafka import connect, ensure_topics, make_producer

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
                result = await publisher.publish([mention])
                observe_lag(source.name, result.mentions)
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
    pollers: Sequence[HttpSource] | None = None,
) -> None:
    """Run until ``stop`` is set. The database must already be migrated.

    ``pollers`` None: the enabled sources of ``settings.listening_file`` (if set).
    """
    if not settings.kafka_bootstrap_servers:
        raise ValueError("kafka_bootstrap_servers is empty: start the broker first")
    if pollers is None:
        pollers = (
            build_sources(load_listening(settings.listening_file))
            if settings.listening_file is not None
            else []
        )
    engine = make_engine(settings.resolved_database_url)
    producer = make_producer(settings.kafka_bootstrap_servers)
    publisher: Publisher | None = None
    server: uvicorn.Server | None = None
    tasks: list[asyncio.Task[None]] = []
    try:
        if serve_webhook:
            # Up before Kafka so /healthz answers and /readyz says "not started" meanwhile.
            secret = settings.webhook_secret.get_secret_value() if settings.webhook_secret else None
            app = create_ingest_app(
                lambda: publisher, secret, sources=lambda: [p.health for p in pollers]
            )
            server, sock = make_server(
                app, settings.ingest_host, settings.ingest_port, "ingest webhook"
            )
            tasks.append(asyncio.create_task(server.serve(sockets=[sock]), name="ingest-webhook"))
            if secret is None:
                log.info("ingest webhook disabled: THIRDRING_WEBHOOK_SECRET is not set")
        await connect(
            "ingest topics",
            lambda: ensure_topics(
                settings.kafka_bootstrap_servers,
                [settings.topic_raw, settings.topic_dlq] if pollers else [settings.topic_raw],
                settings.partitions,
            ),
            stop,
        )
        await connect("ingest producer", producer.start, stop)
        publisher = Publisher(settings, engine, producer)
        source_tasks = [
            asyncio.create_task(run_source(s, publisher, stop), name=f"source-{s.name}")
            for s in sources
        ]
        tasks.extend(source_tasks)
        cursors = CursorStore(engine)
        for p in pollers:
            poller = Poller(
                p,
                publisher=publisher,
                cursors=cursors,
                dlq_topic=settings.topic_dlq,
                raw_topic=settings.topic_raw,
            )
            tasks.append(asyncio.create_task(poller.run(stop), name=f"poller-{p.name}"))
        names = [s.name for s in sources] + [p.name for p in pollers]
        log.info("ingest running: sources %s", names or "none")
        await stop.wait()
    finally:
        await _shutdown(tasks, server)
        for p in pollers:
            with contextlib.suppress(Exception):
                await p.aclose()
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
