"""``thirdring up``: the whole pipeline in one process on the embedded defaults.

Broker (Tansu on loopback unless KAFKA_BOOTSTRAP_SERVERS is set), SQLite, the prepared model,
ingest (webhook + demo source), classify, alert and its API, each as its own task talking
only through Kafka exactly as they do when run as separate containers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import httpx
from rich.console import Console
from rich.panel import Panel

from services.alert.access import create_token, revoke_token
from services.alert.worker import run_alert
from services.classify.model.prepare import prepare_encoder
from services.classify.scoring import Classifier
from services.classify.worker import run_classify
from services.ingest.sources.demo import DemoSource
from services.ingest.worker import run_ingest
from shared.broker import EmbeddedBroker
from shared.config import Settings
from shared.db.engine import make_engine, make_sessionmaker
from shared.db.migrate import upgrade_async
from shared.kafka import ensure_topics
from shared.lifecycle import supervise

log = logging.getLogger(__name__)

UP_TOKEN = "thirdring-up"
DEMO_REPORT_AFTER = 45.0  # seconds: after the demo's breach (~20 s after its first post)


async def run_all(
    settings: Settings,
    stop: asyncio.Event,
    *,
    demo: bool,
    durable: bool,
    console: Console,
) -> None:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    with console.status("preparing the model"):
        await asyncio.to_thread(prepare_encoder, settings.model_dir)
    with console.status("migrating the database"):
        await upgrade_async(settings.resolved_database_url)
    token = await _session_token(settings)

    broker: EmbeddedBroker | None = None
    if not settings.kafka_bootstrap_servers:
        broker = EmbeddedBroker(
            settings.data_dir / "broker", durable=durable or settings.broker_durable
        )
        await asyncio.to_thread(broker.start)
        settings = settings.model_copy(update={"kafka_bootstrap_servers": broker.bootstrap_servers})
    try:
        await ensure_topics(
            settings.kafka_bootstrap_servers,
            [settings.topic_raw, settings.topic_scored, settings.topic_dlq],
            settings.partitions,
        )
        with console.status("loading the classifier"):
            classifier = await asyncio.to_thread(
                Classifier.load, settings.model_dir, None, settings.classify_threads
            )
        tasks = [
            asyncio.create_task(
                run_ingest(settings, sources=[DemoSource()] if demo else [], stop=stop),
                name="ingest",
            ),
            asyncio.create_task(run_classify(settings, stop, classifier), name="classify"),
            asyncio.create_task(run_alert(settings, stop), name="alert"),
        ]
        _print_where_to_look(console, settings, broker, demo, token)
        if demo:
            report = _demo_report(settings, stop, console, token)
            tasks.append(asyncio.create_task(report, name="report"))
        try:
            await supervise(tasks, stop)
        finally:
            await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        if broker is not None:
            await asyncio.to_thread(broker.stop)
        console.print("thirdring stopped")


async def _session_token(settings: Settings) -> str:
    """A fresh admin token for this run (the previous run's is revoked), shown once."""
    engine = make_engine(settings.resolved_database_url)
    try:
        async with make_sessionmaker(engine)() as session, session.begin():
            await revoke_token(session, UP_TOKEN)
            return await create_token(session, UP_TOKEN, "admin")
    finally:
        await engine.dispose()


def _print_where_to_look(
    console: Console, settings: Settings, broker: EmbeddedBroker | None, demo: bool, token: str
) -> None:
    api = f"http://{settings.api_host}:{settings.api_port}"
    ingest = f"http://{settings.ingest_host}:{settings.ingest_port}"
    lines = [
        f"[bold]API docs[/]        {api}/docs",
        f"[bold]open cases[/]      {api}/api/v1/cases",
        f"[bold]response times[/]  {api}/api/v1/stats/response-times",
        f"[bold]webhook[/]         {ingest}/api/v1/ingest/webhook"
        + ("" if settings.webhook_secret else "  (disabled: set THIRDRING_WEBHOOK_SECRET)"),
        f"[bold]health[/]          {api}/readyz · {ingest}/readyz · "
        f"http://{settings.classify_host}:{settings.classify_port}/readyz",
        f"[bold]broker[/]          {settings.kafka_bootstrap_servers}"
        + (" (embedded Tansu)" if broker else ""),
        f"[bold]database[/]        {settings.display_database_url}",
        f"[bold]API token[/]       {token}  (admin, this run only; "
        "curl -H 'Authorization: Bearer …')",
    ]
    if demo:
        lines.append(
            "\nDemo: posts arrive over ~15 s; watch the log for [yellow]ALERT WARNING[/] and "
            "[red]ALERT BREACH[/]; figures are printed after ~45 s."
        )
    lines.append("Ctrl-C stops everything.")
    console.print(Panel("\n".join(lines), title="thirdring is up", expand=False))


async def _demo_report(
    settings: Settings, stop: asyncio.Event, console: Console, token: str
) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=DEMO_REPORT_AFTER)
        return
    api = f"http://{settings.api_host}:{settings.api_port}"
    try:
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(timeout=10, headers=headers) as client:
            stats = (await client.get(f"{api}/api/v1/stats/response-times")).json()
            cases = (await client.get(f"{api}/api/v1/cases", params={"status": "all"})).json()
    except httpx.HTTPError as exc:
        log.warning("demo report failed: %s", exc)
        return
    fr = stats["first_response_seconds"]

    def secs(v: float | None) -> str:
        return "-" if v is None else f"{v:.1f} s"

    ratio = stats["within_target_ratio"]
    console.print(
        Panel(
            f"cases {stats['cases']}, answered {stats['answered']}, breaches {stats['breaches']}, "
            f"within target {'-' if ratio is None else f'{ratio:.0%}'}\n"
            f"first response p50 {secs(fr['p50'])}, p90 {secs(fr['p90'])}, "
            f"mean {secs(fr['mean'])}\n"
            + "\n".join(
                f"case {c['id']} {c['priority']} {c['status']:<8} breached={c['breached']} "
                f"{c['conversation_id']}"
                for c in cases
            ),
            title="demo figures (GET /api/v1/stats/response-times)",
            expand=False,
        )
    )
