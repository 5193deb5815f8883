"""Classify throughput and memory: the service path and the offline command, per backend.

    .venv/bin/python -m bench.classify                      # torch fp32 and onnx int8
    .venv/bin/python -m bench.classify --backends onnx --posts 3000 --batch 64 --repeat 2

(a) service: a real Tansu broker (``EmbeddedBroker``, 12 partitions); the classify worker
    (``run_classify``) runs alone in a fresh subprocess; N real tweets are published to
    ``mentions.raw`` at once; the clock runs from the first publish to the last scored event
    read back from ``mentions.scored``. One post goes through first (not timed), so the
    consumer group has joined and the model is warm.
(b) offline: ``thirdring classify -i FILE -o FILE`` on N JSONL lines in a fresh subprocess;
    posts/s is N over (wall time - the wall time of the same command on one line), i.e. the
    model's load time is left out; the wall time with it is reported too.

Peak RSS is the subprocess's own high-water mark (``ru_maxrss`` from ``wait4``), so it is the
classify process alone (the broker, publisher and reader run elsewhere). Prints a table and
writes ``bench/results/classify.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

console = Console()
ROOT = Path(__file__).resolve().parents[1]


def _wait_rusage(proc: subprocess.Popen[bytes], timeout: float) -> tuple[int, float]:
    """Wait for ``proc`` and return (exit status, peak RSS in MB) from ``wait4``."""
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return proc.returncode, usage.ru_maxrss / 1024
        if time.monotonic() > deadline:
            proc.kill()
            timeout = 30
            deadline = time.monotonic() + timeout
        time.sleep(0.05)


def _env(backend: str, batch: int | None) -> dict[str, str]:
    env = dict(os.environ)
    env["THIRDRING_ENCODER_BACKEND"] = backend
    env.setdefault("THIRDRING_LOG_LEVEL", "WARNING")
    if batch is not None:
        env["THIRDRING_CLASSIFY_BATCH_SIZE"] = str(batch)
    return env


# ----------------------------------------------------------------------------- (a) service


def _service_child(bootstrap: str, suffix: str, partitions: int) -> None:
    """The subprocess: only the classify worker, stopped by SIGTERM."""
    from services.classify.worker import run_classify
    from shared.config import Settings
    from shared.observability import setup_logging
    from shared.ports import free_port

    setup_logging("WARNING")
    settings = Settings(
        kafka_bootstrap_servers=bootstrap,
        topic_raw=f"raw-{suffix}",
        topic_scored=f"scored-{suffix}",
        topic_dlq=f"dlq-{suffix}",
        partitions=partitions,
        consumer_group_prefix=f"bench-{suffix}",
        classify_port=free_port(),
    )

    from services.classify.scoring import Classifier

    classifier = Classifier.load(settings.model_dir, None, settings.classify_threads)
    score = classifier.score
    stats = {"calls": 0, "posts": 0, "model_seconds": 0.0, "model_cpu": 0.0}

    def timed_score(items, waited=None):  # type: ignore[no-untyped-def]
        started, cpu = time.perf_counter(), time.process_time()
        try:
            return score(items, waited)
        finally:
            stats["calls"] += 1
            stats["posts"] += len(items)
            stats["model_seconds"] += time.perf_counter() - started
            stats["model_cpu"] += time.process_time() - cpu

    classifier.score = timed_score  # type: ignore[method-assign]

    async def main() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await run_classify(settings, stop, classifier, serve_health=False)

    asyncio.run(main())
    print("BENCH-STATS " + json.dumps(stats), flush=True)


async def _drive_service(bootstrap: str, suffix: str, texts: list[str], partitions: int) -> float:
    """Publish one warm-up post, wait for it, then publish ``texts``; seconds to the last one."""
    from aiokafka import AIOKafkaConsumer

    from shared.events import Author, RawMention, utcnow
    from shared.kafka import ensure_topics, make_producer

    raw, scored = f"raw-{suffix}", f"scored-{suffix}"
    await ensure_topics(bootstrap, [raw, scored, f"dlq-{suffix}"], partitions)
    producer = make_producer(bootstrap)
    await producer.start()
    reader = AIOKafkaConsumer(
        scored,
        bootstrap_servers=bootstrap,
        group_id=f"bench-read-{suffix}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await reader.start()
    now = utcnow()

    def mention(i: int, text: str) -> RawMention:
        return RawMention(
            source="bench",
            external_id=str(i),
            conversation_id=f"bench:{i % 500}",
            brand="acme",
            author=Author(id=f"u{i % 997}"),
            text=text,
            created_at=now,
        )

    async def read(n: int, timeout: float) -> None:
        seen = 0
        deadline = time.monotonic() + timeout
        while seen < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {seen} of {n} scored events within {timeout:.0f}s")
            batch = await reader.getmany(timeout_ms=100, max_records=10_000)
            seen += sum(len(r) for r in batch.values())

    try:
        warm = mention(-1, "warm-up post: is the service there?")
        await producer.send_and_wait(raw, warm.to_bytes(), key=warm.key)
        await read(1, timeout=180)
        payloads = [mention(i, t) for i, t in enumerate(texts)]
        encoded = [(m.to_bytes(), m.key) for m in payloads]
        start = time.perf_counter()
        acks = [await producer.send(raw, value, key=key) for value, key in encoded]
        await asyncio.gather(*acks)
        await read(len(texts), timeout=60 + len(texts) / 5)
        return time.perf_counter() - start
    finally:
        await reader.stop()
        await producer.stop()


def bench_service(backend: str, texts: list[str], batch: int | None) -> dict[str, Any]:
    from shared.broker import EmbeddedBroker

    partitions = 12
    suffix = uuid.uuid4().hex[:8]
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker(Path(tmp) / "broker") as broker:
        cmd = [sys.executable, "-m", "bench.classify", "--child-service", broker.bootstrap_servers]
        cmd += ["--suffix", suffix, "--partitions", str(partitions)]
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=_env(backend, batch), stdout=subprocess.PIPE, text=True
        )
        try:
            seconds = asyncio.run(
                _drive_service(broker.bootstrap_servers, suffix, texts, partitions)
            )
        finally:
            proc.send_signal(signal.SIGTERM)
            code, rss = _wait_rusage(proc, timeout=30)
    out = proc.stdout.read() if proc.stdout else ""
    stats = next(
        (json.loads(line[12:]) for line in out.splitlines() if line.startswith("BENCH-STATS ")),
        {},
    )
    calls = max(1, stats.get("calls", 1) - 2)  # the warm-ups (load, first post) are included
    return {
        "mean_batch": round((stats.get("posts", 0) - 4) / calls, 1),
        "model_seconds": round(stats.get("model_seconds", 0.0), 2),
        "model_cpu_seconds": round(stats.get("model_cpu", 0.0), 2),
        "posts": len(texts),
        "seconds": round(seconds, 2),
        "posts_per_s": round(len(texts) / seconds, 1),
        "peak_rss_mb": round(rss),
        "exit_code": code,
    }


# ----------------------------------------------------------------------------- (b) offline


def _run_offline(backend: str, inp: Path, out: Path, batch: int | None) -> tuple[float, float]:
    cmd = [str(Path(sys.executable).with_name("thirdring")), "classify", "-i", str(inp)]
    cmd += ["-o", str(out)]
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=_env(backend, batch), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    code, rss = _wait_rusage(proc, timeout=1800)
    seconds = time.perf_counter() - start
    if code != 0:
        err = proc.stderr.read().decode() if proc.stderr else ""
        raise RuntimeError(f"thirdring classify failed ({code}): {err[-2000:]}")
    return seconds, rss


def bench_offline(backend: str, texts: list[str], batch: int | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        inp, one = Path(tmp) / "in.jsonl", Path(tmp) / "one.jsonl"
        lines = [json.dumps({"id": i, "text": t}, ensure_ascii=False) for i, t in enumerate(texts)]
        inp.write_text("\n".join(lines) + "\n")
        one.write_text(lines[0] + "\n")
        load_seconds, _ = _run_offline(backend, one, Path(tmp) / "one.out", batch)
        seconds, rss = _run_offline(backend, inp, Path(tmp) / "out.jsonl", batch)
        scored = sum(1 for _ in (Path(tmp) / "out.jsonl").open())
    assert scored == len(texts), (scored, len(texts))
    return {
        "posts": len(texts),
        "wall_seconds": round(seconds, 2),
        "load_seconds": round(load_seconds, 2),
        "posts_per_s": round(len(texts) / max(seconds - load_seconds, 1e-6), 1),
        "posts_per_s_with_load": round(len(texts) / seconds, 1),
        "peak_rss_mb": round(rss),
    }


# ----------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--posts", type=int, default=3000)
    parser.add_argument("--backends", default="torch,onnx", help="comma-separated: torch,onnx")
    parser.add_argument("--paths", default="service,offline", help="service,offline")
    parser.add_argument(
        "--batch",
        type=int,
        default=256,
        help="THIRDRING_CLASSIFY_BATCH_SIZE for the classify process (the Settings default is 64)",
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs per measurement")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/classify.json")
    parser.add_argument("--child-service", metavar="BOOTSTRAP", help=argparse.SUPPRESS)
    parser.add_argument("--suffix", help=argparse.SUPPRESS)
    parser.add_argument("--partitions", type=int, default=12, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_service:
        _service_child(args.child_service, args.suffix, args.partitions)
        return

    from bench.pipeline import sample_texts
    from services.classify.model import default_model_dir
    from services.classify.model.prepare import prepare_encoder

    prepare_encoder(default_model_dir())  # so no measurement includes the one-time export
    texts = sample_texts(args.posts)
    runs: list[dict[str, Any]] = []
    for backend in args.backends.split(","):
        for path in args.paths.split(","):
            for rep in range(args.repeat):
                fn = bench_service if path == "service" else bench_offline
                with console.status(f"{path}, {backend}, run {rep + 1}"):
                    result = fn(backend, texts, args.batch)
                result = {"path": path, "backend": backend, "run": rep + 1, **result}
                console.print(result)
                runs.append(result)

    table = Table(
        title=f"thirdring classify, {len(texts)} tweets, batch {args.batch}, {os.cpu_count()} cores"
    )
    for col in ("path", "backend", "run", "posts/s", "peak RSS (MB)", "note"):
        table.add_column(col, justify="right" if col in ("posts/s", "peak RSS (MB)") else "left")
    for r in runs:
        note = (
            f"{r['seconds']} s publish -> last scored"
            if r["path"] == "service"
            else f"{r['wall_seconds']} s wall incl. {r['load_seconds']} s load"
        )
        table.add_row(
            r["path"],
            r["backend"],
            str(r["run"]),
            f"{r['posts_per_s']:.0f}",
            f"{r['peak_rss_mb']}",
            note,
        )
    console.print(table)
    result = {
        "posts": len(texts),
        "cores": os.cpu_count(),
        "batch_size": args.batch,
        "date": time.strftime("%Y-%m-%d"),
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
