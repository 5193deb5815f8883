"""Replay ingest throughput into Kafka (`bench/ingest`): posts/s from a JSONL file.

Embedded Tansu (in memory) and SQLite (the dedupe table) in a temp dir; the real
`replay_file` path (parse, validate, dedupe by event id, publish keyed by conversation).

    .venv/bin/python -m bench.ingest --posts 50000

Prints first-run and repeat-run (all duplicates) posts/s; writes bench/results/ingest.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from rich.console import Console
from rich.table import Table

from services.ingest.publisher import Publisher
from services.ingest.sources.replay import replay_file
from shared.broker import EmbeddedBroker
from shared.config import Settings
from shared.db.engine import make_engine
from shared.db.migrate import upgrade_async
from shared.kafka import ensure_topics, make_producer

console = Console()


def write_file(path: Path, n: int) -> None:
    t0 = datetime(2026, 11, 1, tzinfo=UTC)
    with path.open("w") as out:
        for i in range(n):
            out.write(
                json.dumps(
                    {
                        "source": "bench",
                        "external_id": str(i),
                        "conversation_id": f"bench:{i % 5000}",
                        "brand": "acme",
                        "author": {"id": f"u{i % 9973}", "followers": i % 5000},
                        "text": f"My order #{i} never arrived and nobody answers my emails",
                        "created_at": (t0 + timedelta(seconds=i)).isoformat(),
                    }
                )
                + "\n"
            )


async def run(n: int, workdir: Path) -> dict[str, float]:
    path = workdir / "posts.jsonl"
    write_file(path, n)
    with EmbeddedBroker(workdir / "broker") as broker:
        settings = Settings(data_dir=workdir, kafka_bootstrap_servers=broker.bootstrap_servers)
        await upgrade_async(settings.resolved_database_url)
        await ensure_topics(broker.bootstrap_servers, [settings.topic_raw], settings.partitions)
        engine = make_engine(settings.resolved_database_url)
        producer = make_producer(broker.bootstrap_servers)
        await producer.start()
        publisher = Publisher(settings, engine, producer)
        results = {}
        for label in ("first", "repeat"):
            start = time.perf_counter()
            report = await replay_file(path, "jsonl", publisher, progress=False)
            elapsed = time.perf_counter() - start
            assert not report.errors
            results[f"{label}_posts_per_s"] = n / elapsed
            results[f"{label}_published"] = report.published
            results[f"{label}_duplicates"] = report.duplicates
        await producer.stop()
        await engine.dispose()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--posts", type=int, default=50_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = asyncio.run(run(args.posts, Path(tmp)))
    table = Table(title=f"replay ingest, {args.posts:,} posts (Tansu + SQLite dedupe)")
    table.add_column("run")
    table.add_column("posts/s", justify="right")
    table.add_column("published / duplicates", justify="right")
    for label in ("first", "repeat"):
        table.add_row(
            label,
            f"{results[f'{label}_posts_per_s']:,.0f}",
            f"{results[f'{label}_published']:,} / {results[f'{label}_duplicates']:,}",
        )
    console.print(table)
    out = Path("bench/results/ingest.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"posts": args.posts, **results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
