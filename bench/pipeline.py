"""End-to-end throughput: posts/s through ingest -> classify -> alert, and classify alone.

Runs on the embedded defaults (Tansu in memory, SQLite in a temp dir) in one process, the
services as tasks talking over Kafka exactly as in `thirdring up`.

    .venv/bin/python -m bench.pipeline --posts 2000

Prints a table and writes bench/results/pipeline.json. All posts are published at once, so
this measures sustained throughput with a backlog; the latency figures include the wait in
that backlog (ingested -> stored by alert), not the latency of a lone post.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import statistics
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from sqlalchemy import func, select

from services.alert.worker import run_alert
from services.classify.model import default_model_dir
from services.classify.model.prepare import prepare_encoder
from services.classify.scoring import Classifier
from services.classify.worker import run_classify
from services.ingest.publisher import Publisher
from services.ingest.worker import run_ingest
from shared.broker import EmbeddedBroker
from shared.config import Settings
from shared.db.engine import make_engine, make_sessionmaker
from shared.db.migrate import upgrade_async
from shared.db.models import Mention
from shared.events import Author, RawMention, utcnow
from shared.kafka import ensure_topics, make_producer
from shared.observability import setup_logging
from shared.ports import free_port

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
console = Console()


def sample_texts(n: int, seed: int = 7) -> list[str]:
    """Real tweets from the development data (typical length), cycled to ``n``."""
    texts: list[str] = []
    for lang in ("english", "italian", "spanish", "french", "german", "portuguese"):
        path = DATA / "sentiment-umsab" / lang / "val_text.txt"
        if path.exists():
            texts += [t for t in path.read_text().splitlines() if t.strip()]
    if not texts:
        texts = ["My order never arrived and support does not answer, I want a refund"] * 10
    random.Random(seed).shuffle(texts)
    return [texts[i % len(texts)] for i in range(n)]


def bench_classify(classifier: Classifier, texts: list[str], batch: int) -> dict[str, float]:
    classifier.score([(t, None) for t in texts[:batch]])  # warm-up
    start = time.perf_counter()
    for i in range(0, len(texts), batch):
        classifier.score([(t, None) for t in texts[i : i + batch]])
    elapsed = time.perf_counter() - start
    return {"texts": len(texts), "seconds": elapsed, "texts_per_s": len(texts) / elapsed}


async def bench_pipeline(
    classifier: Classifier, texts: list[str], workdir: Path
) -> dict[str, float]:
    with EmbeddedBroker(workdir / "broker") as broker:
        settings = Settings(
            data_dir=workdir,
            kafka_bootstrap_servers=broker.bootstrap_servers,
            partitions=12,
            api_port=free_port(),
            ingest_port=free_port(),
        )
        await upgrade_async(settings.resolved_database_url)
        await ensure_topics(
            broker.bootstrap_servers,
            [settings.topic_raw, settings.topic_scored, settings.topic_dlq],
            settings.partitions,
        )
        stop = asyncio.Event()
        tasks = [
            asyncio.create_task(run_ingest(settings, sources=[], stop=stop, serve_webhook=False)),
            asyncio.create_task(run_classify(settings, stop, classifier, serve_health=False)),
            asyncio.create_task(run_alert(settings, stop, serve_api=False)),
        ]
        engine = make_engine(settings.resolved_database_url)
        sessions = make_sessionmaker(engine)
        producer = make_producer(broker.bootstrap_servers)
        await producer.start()
        now = utcnow()
        mentions = [
            RawMention(
                source="bench",
                external_id=str(i),
                conversation_id=f"bench:{i % 500}",
                brand="acme",
                author=Author(id=f"u{i % 997}"),
                text=t,
                created_at=now,  # no deadline falls due during the run
            )
            for i, t in enumerate(texts)
        ]
        publisher = Publisher(settings, engine, producer)
        start = time.perf_counter()
        await publisher.publish(mentions)
        published = time.perf_counter() - start
        with Progress(console=console, transient=True) as bar:
            task = bar.add_task("pipeline", total=len(mentions))
            done = 0
            while done < len(mentions):
                await asyncio.sleep(0.5)
                async with sessions() as s:
                    done = await s.scalar(select(func.count()).select_from(Mention)) or 0
                bar.update(task, completed=done)
        elapsed = time.perf_counter() - start
        async with sessions() as s:
            rows = (await s.execute(select(Mention.ingested_at, Mention.stored_at))).all()
        latencies = sorted((r.stored_at - r.ingested_at).total_seconds() for r in rows)
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        await producer.stop()
        await engine.dispose()
    q = statistics.quantiles(latencies, n=100)
    return {
        "posts": len(mentions),
        "publish_seconds": published,
        "seconds": elapsed,
        "posts_per_s": len(mentions) / elapsed,
        "latency_p50_s": q[49],
        "latency_p99_s": q[98],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--posts", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--out", type=Path, default=Path("bench/results/pipeline.json"))
    args = parser.parse_args()
    setup_logging("ERROR")  # a benchmark, not a demo: no per-alert log lines

    prepare_encoder(default_model_dir())
    classifier = Classifier.load(default_model_dir())
    texts = sample_texts(args.posts)
    classify = bench_classify(classifier, texts[: min(len(texts), 1024)], args.batch)
    with tempfile.TemporaryDirectory() as tmp:
        pipeline = asyncio.run(bench_pipeline(classifier, texts, Path(tmp)))
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {"classify": classify, "pipeline": pipeline, "max_rss_mb": rss_mb}

    table = Table(title="thirdring pipeline benchmark")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("classify alone, texts/s", f"{classify['texts_per_s']:.0f}")
    table.add_row("pipeline, posts/s", f"{pipeline['posts_per_s']:.0f}")
    table.add_row("end-to-end latency p50 (s)", f"{pipeline['latency_p50_s']:.2f}")
    table.add_row("end-to-end latency p99 (s)", f"{pipeline['latency_p99_s']:.2f}")
    table.add_row("peak RSS, all services in one process (MB)", f"{rss_mb:.0f}")
    console.print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
