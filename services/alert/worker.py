"""The alert service: consume scored mentions, keep cases and clocks, fire and deliver alerts.

Four loops share one process: the Kafka consumer (cases), the deadline scheduler, the outbox
dispatcher, and the HTTP API. Each can also run as its own replica set; the database is the
only thing they share.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.alert.api.app import create_api_app
from services.alert.cases.service import CaseSettings, apply_scored
from services.alert.config import alerting_config
from services.alert.notify.outbox import OutboxDispatcher
from services.alert.notify.registry import build_notifiers
from services.alert.routing.housekeeping import housekeeping
from services.alert.routing.sync import sync_teams_and_rules
from services.alert.sla.scheduler import Delivery, fire_due
from services.alert.sla.store import sync_policies
from shared import consumer_metrics
from shared.config import Settings
from shared.db.engine import make_engine, make_sessionmaker
from shared.events import ScoredMention, utcnow
from shared.health import create_health_app
from shared.http import serve
from shared.kafka import ConsumerLoop, Item, connect, ensure_topics, make_producer
from shared.lifecycle import every, supervise

log = logging.getLogger(__name__)

# Queued cases wait at most this long after their team comes on duty.
HOUSEKEEPING_INTERVAL = 30.0
# Outcomes of a mention logged at INFO (duplicates and notes are DEBUG).
CASE_CHANGES = ("opened", "next_cycle", "answered", "raised", "resumed")


def case_handler(
    sessions: async_sessionmaker[AsyncSession], case_settings: CaseSettings
) -> Callable[[list[Item[ScoredMention]]], Awaitable[None]]:
    async def handle(items: list[Item[ScoredMention]]) -> None:
        # One transaction per batch; offsets are committed by the loop only after it.
        async with sessions() as session, session.begin():
            for item in items:
                outcome = await apply_scored(session, item.value, case_settings)
                # What moves a case is worth a line (with ids to follow it); the rest is noise.
                level = logging.INFO if outcome.action in CASE_CHANGES else logging.DEBUG
                log.log(
                    level,
                    "mention %s: %s case %s",
                    outcome.event_id,
                    outcome.action,
                    outcome.case_id,
                    extra={"event_id": outcome.event_id, "case_id": outcome.case_id},
                )

    return handle


async def run_alert(
    settings: Settings,
    stop: asyncio.Event,
    *,
    serve_api: bool = True,
    serve_health: bool = False,
) -> None:
    """Run until ``stop``. Without the API, ``serve_health`` still answers probes on its port."""
    engine = make_engine(settings.resolved_database_url)
    sessions = make_sessionmaker(engine)
    config = alerting_config(settings)
    notifiers = build_notifiers(settings, config)
    async with sessions() as session, session.begin():
        # The file is the source of truth at start: policies get new versions if changed.
        await sync_policies(session, config.resolved_policies(), utcnow())
        await sync_teams_and_rules(session, config, utcnow())
    producer = make_producer(settings.kafka_bootstrap_servers)
    await connect("alert producer", producer.start, stop)
    await connect(
        "alert topics",
        lambda: ensure_topics(
            settings.kafka_bootstrap_servers,
            [settings.topic_scored, settings.topic_dlq],
            settings.partitions,
        ),
        stop,
    )
    consumer = ConsumerLoop[ScoredMention](
        name="alert",
        bootstrap=settings.kafka_bootstrap_servers,
        topic=settings.topic_scored,
        group_id=settings.group("alert"),
        parse=ScoredMention.model_validate_json,
        handle=case_handler(sessions, CaseSettings(incidents=config.incidents)),
        producer=producer,
        dlq_topic=settings.topic_dlq,
    )
    dispatcher = OutboxDispatcher(
        sessions,
        notifiers,
        max_attempts=settings.notify_max_attempts,
        backoff_base=settings.notify_backoff_base,
        backoff_max=settings.notify_backoff_max,
        lease_seconds=settings.notify_lease_seconds,
    )
    delivery = Delivery(
        default_channels=config.default_channels,
        known_channels=set(notifiers),
        case_url=f"http://{settings.api_host}:{settings.api_port}/api/v1/cases/{{id}}",
    )

    async def consumer_ready() -> bool:
        return consumer.ready.is_set()

    tasks = [
        asyncio.create_task(consumer.run(), name="alert-consumer"),
        asyncio.create_task(
            every(
                settings.scheduler_interval, stop, "scheduler", lambda: fire_due(sessions, delivery)
            ),
            name="alert-scheduler",
        ),
        asyncio.create_task(
            every(settings.outbox_interval, stop, "outbox", dispatcher.dispatch_due),
            name="alert-outbox",
        ),
        asyncio.create_task(
            every(
                HOUSEKEEPING_INTERVAL,
                stop,
                "housekeeping",
                lambda: housekeeping(sessions, config.incidents),
            ),
            name="alert-housekeeping",
        ),
    ]
    app = None
    if serve_api:
        app = create_api_app(sessions, consumer_ready)
    elif serve_health:
        app = create_health_app(
            "alert", {"consumer": consumer_ready}, metrics=consumer_metrics.render_with_process
        )
    if app is not None:
        tasks.append(
            asyncio.create_task(
                serve(app, settings.api_host, settings.api_port, stop, "alert API"), name="api"
            )
        )
    log.info(
        "alert service running (policies %s; channels %s)",
        ", ".join(p.name for p in config.policies),
        ", ".join(notifiers),
    )
    try:
        await supervise(tasks, stop)
    finally:
        consumer.stop()
        await asyncio.gather(*tasks, return_exceptions=True)
        for notifier in notifiers.values():
            await notifier.close()
        await producer.stop()
        await engine.dispose()
