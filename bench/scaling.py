"""Scaling classify: 1, 2, 3 classify processes against one Tansu broker, each a separate
``thirdring run classify`` process in the consumer group ``thirdring-classify``, with one
``thirdring run alert --no-api`` process behind them.

    flock /tmp/thirdring-cpu.lock .venv/bin/python -m bench.scaling --classify-procs 1,2,3

For each N, on a fresh broker (Tansu in memory) and a fresh database (PostgreSQL when
``--postgres-url`` or THIRDRING_TEST_POSTGRES_URL is set, else SQLite):

1. start the processes and wait until the N replicas split the 12 partitions (each says
   what it holds on its ``/metrics``);
2. backlog: publish ``--posts`` real tweets at once through the ingest publisher and
   measure sustained throughput, the rate between 10% and 90% of the posts: of classify
   (scored events, by the time classify produced them) and end to end (mentions stored by
   alert, the moment their case was updated);
3. paced: publish ``--rate`` posts/s for ``--seconds`` and measure the end-to-end latency,
   post published (``ingested_at``) -> case updated (``stored_at``), p50 and p99;
4. check that every post was stored once and count the scored events beyond one per post
   (at-least-once duplicates; none are expected without a rebalance mid-run).

Prints a table and writes bench/results/scaling.json. The machine has 2 cores: N
processes share them (``--threads`` encoder threads each; by default every core each).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from sqlalchemy import select

from bench.pipeline import sample_texts
from services.ingest.publisher import Publisher
from shared.broker import EmbeddedBroker
from shared.config import Settings
from shared.db.engine import make_engine
from shared.db.models import Mention
from shared.events import Author, RawMention, utcnow
from shared.kafka import ensure_topics, make_producer
from tests.e2e.outcomes import read_all
from tests.procs import Pipeline, database, held_partitions, service_env, wait_split

ROOT = Path(__file__).resolve().parents[1]
PARTITIONS = 12
console = Console()


def mentions(texts: list[str], tag: str) -> list[RawMention]:
    now = utcnow()
    return [
        RawMention(
            source="bench",
            external_id=f"{tag}-{i}",
            conversation_id=f"bench:{tag}:{i % 600}",
            brand="acme",
            author=Author(id=f"u{i % 997}"),
            text=text,
            created_at=now,  # the default policy's targets are far away: nobody is paged
        )
        for i, text in enumerate(texts)
    ]


def sustained(times: list[float]) -> float:
    """Items per second between the 10th and the 90th percentile of their times."""
    times = sorted(times)
    lo, hi = times[len(times) // 10], times[(len(times) * 9) // 10]
    return 0.8 * len(times) / max(hi - lo, 1e-6)


async def stored_rows(engine: Any, prefix: str) -> list[Any]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(Mention.external_id, Mention.ingested_at, Mention.stored_at).where(
                Mention.external_id.like(f"{prefix}-%")
            )
        )
        return list(rows.all())


async def wait_stored(engine: Any, prefix: str, n: int, timeout: float) -> list[Any]:
    deadline = time.monotonic() + timeout
    while True:
        rows = await stored_rows(engine, prefix)
        if len(rows) >= n:
            return rows
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(rows)} of {n} {prefix} posts stored in {timeout:.0f}s")
        await asyncio.sleep(0.5)


async def measure(n_procs: int, args: argparse.Namespace, texts: list[str]) -> dict[str, Any]:
    suffix = uuid.uuid4().hex[:6]
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        with EmbeddedBroker(workdir / "broker") as broker:
            await ensure_topics(
                broker.bootstrap_servers,
                ["mentions.raw", "mentions.scored", "mentions.dlq"],
                PARTITIONS,
            )
            async with database(args.postgres_url, workdir) as db_url:
                extra = {"THIRDRING_LOG_LEVEL": "WARNING"}
                if args.threads:
                    extra["THIRDRING_CLASSIFY_THREADS"] = str(args.threads)
                env = service_env(
                    broker.bootstrap_servers,
                    db_url,
                    workdir,
                    THIRDRING_PARTITIONS=str(PARTITIONS),
                    **extra,
                )
                pipeline = Pipeline(workdir, env)
                alert = pipeline.add(
                    "alert", "run", "alert", "--no-api", port_var="THIRDRING_API_PORT"
                )
                classify = [
                    pipeline.add(
                        f"classify-{i}", "run", "classify", port_var="THIRDRING_CLASSIFY_PORT"
                    )
                    for i in range(1, n_procs + 1)
                ]
                with pipeline.running():
                    await pipeline.start(alert, *classify, timeout=180)
                    await wait_split(classify, "classify", PARTITIONS, timeout=120)
                    split = await held_partitions(classify, "classify")
                    result = await drive(broker, db_url, workdir, texts, args, suffix)
                    result["partitions_held"] = split
                    codes = pipeline.stop()
                scored = await read_all(broker.bootstrap_servers, "mentions.scored")
    copies = len(scored)
    distinct = len({json.loads(r.value)["mention"]["event_id"] for r in scored})
    backlog = [r.timestamp / 1000 for r in scored if b'"external_id":"backlog-' in r.value]
    result["backlog"]["classify_sustained_posts_per_s"] = round(sustained(backlog), 1)
    result["scored_events"] = copies
    result["scored_duplicates"] = copies - distinct
    result["exit_codes"] = codes
    return {"classify_procs": n_procs, **result}


async def drive(
    broker: EmbeddedBroker,
    db_url: str,
    workdir: Path,
    texts: list[str],
    args: argparse.Namespace,
    suffix: str,
) -> dict[str, Any]:
    settings = Settings(data_dir=workdir, kafka_bootstrap_servers=broker.bootstrap_servers)
    engine = make_engine(db_url)
    producer = make_producer(broker.bootstrap_servers)
    await producer.start()
    try:
        publisher = Publisher(settings, engine, producer)
        # 1. Backlog: everything at once.
        backlog = mentions(texts[: args.posts], "backlog")
        started = time.perf_counter()
        await publisher.publish(backlog)
        rows = await wait_stored(engine, "backlog", len(backlog), timeout=60 + args.posts / 5)
        elapsed = time.perf_counter() - started
        stored_at = [r.stored_at.timestamp() for r in rows]
        # 2. Paced: a steady rate, for latency.
        paced = mentions(texts[: int(args.rate * args.seconds)], "paced")
        step = 0.1
        per_step = max(1, round(args.rate * step))
        began = time.perf_counter()
        for i in range(0, len(paced), per_step):
            await publisher.publish(paced[i : i + per_step])
            await asyncio.sleep(max(0.0, began + (i // per_step + 1) * step - time.perf_counter()))
        rows = await wait_stored(engine, "paced", len(paced), timeout=120 + args.seconds)
        latencies = sorted((r.stored_at - r.ingested_at).total_seconds() for r in rows)
        q = statistics.quantiles(latencies, n=100)
        return {
            "backlog": {
                "posts": len(backlog),
                "seconds": round(elapsed, 2),
                "e2e_posts_per_s": round(len(backlog) / elapsed, 1),
                "e2e_sustained_posts_per_s": round(sustained(stored_at), 1),
            },
            "paced": {
                "rate": args.rate,
                "posts": len(paced),
                "latency_p50_s": round(q[49], 3),
                "latency_p99_s": round(q[98], 3),
                "latency_max_s": round(latencies[-1], 3),
            },
            "stored": len(await stored_rows(engine, "backlog"))
            + len(await stored_rows(engine, "paced")),
        }
    finally:
        await producer.stop()
        await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classify-procs", default="1,2,3", help="comma-separated N")
    parser.add_argument("--posts", type=int, default=3000, help="backlog posts per N")
    parser.add_argument("--rate", type=float, default=30.0, help="paced posts/s")
    parser.add_argument("--seconds", type=float, default=30.0, help="paced duration")
    parser.add_argument("--threads", type=int, default=0, help="encoder threads per process")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("THIRDRING_TEST_POSTGRES_URL") or None,
        help="a database per run is created on this server (default: SQLite)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/scaling.json")
    args = parser.parse_args()
    counts = [int(n) for n in args.classify_procs.split(",")]
    texts = sample_texts(max(args.posts, int(args.rate * args.seconds)))
    runs = []
    for n in counts:
        with console.status(f"{n} classify process(es)"):
            result = asyncio.run(measure(n, args, texts))
        console.print(result)
        runs.append(result)

    table = Table(
        title=f"thirdring scaling classify, {os.cpu_count()} cores, "
        f"{'PostgreSQL' if args.postgres_url else 'SQLite'}, Tansu in memory"
    )
    for col in (
        "classify procs",
        "partitions each",
        "classify posts/s",
        "end-to-end posts/s",
        f"latency p50 / p99 at {args.rate:g}/s",
        "stored",
        "dup. scored",
    ):
        table.add_column(col, justify="right")
    for r in runs:
        table.add_row(
            str(r["classify_procs"]),
            "/".join(f"{h:.0f}" for h in r["partitions_held"]),
            f"{r['backlog']['classify_sustained_posts_per_s']:.0f}",
            f"{r['backlog']['e2e_sustained_posts_per_s']:.0f}",
            f"{r['paced']['latency_p50_s']:.2f} / {r['paced']['latency_p99_s']:.2f} s",
            f"{r['stored']}/{r['backlog']['posts'] + r['paced']['posts']}",
            str(r["scored_duplicates"]),
        )
    console.print(table)
    out = {
        "date": time.strftime("%Y-%m-%d"),
        "cores": os.cpu_count(),
        "database": "postgresql" if args.postgres_url else "sqlite",
        "broker": "tansu in memory",
        "threads_per_process": args.threads or "default (every core)",
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
