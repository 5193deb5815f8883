"""Faults under load: 10,000 posts through ingest, classify and alert as separate processes,
on Tansu with durable storage and PostgreSQL, while the test

- kills -9 a service process several times (classify and alert twice each, ingest once in
  the middle of webhook traffic), restarting it after a moment, as a supervisor would;
- restarts the broker (and its storage);
- takes the notification target down for a while: first it answers 503, then it refuses
  connections, then it comes back;
- feeds malformed and oversized records to both topics, broken lines to the replay and
  bad requests to the webhook.

Then every post must be stored once, every case be what its conversation makes it, every
due notification be delivered exactly once per case and stage (after deduplication by the
delivery id, as receivers are told to do; a copy can only come from a kill between a send
and its record), every bad record be in the dead-letter topic with its reason, no good
record be there, every service stop cleanly on SIGTERM, the logs be JSON with event and
case ids, and no configured secret appear in any log.

The faults are placed at random points of progress (THIRDRING_FAULT_SEED picks them; it is
printed, so a failing run can be repeated). THIRDRING_FAULT_POSTS changes the number of
posts (default 10,000) for quick local runs.

Tansu 0.6's S3 storage engine, unlike Apache Kafka, can lose acknowledged records when one
partition gets two writes within milliseconds, from two clients or from one client's
back-to-back requests (its offset bookkeeping then places the next batch over the end of
the previous one). The producers send a partition's share of a batch in one request, and
the test gives each topic one writer at a time (bad records before any post, the replay
before the webhook, one letter key per stage) and kills no replay mid-write; if posts go
missing, the failure says whether the broker's own files overlap (its fault, not the
pipeline's). See docs/operations.md, "Faults".
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import random
import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.broker import EmbeddedBroker
from shared.db.engine import make_engine
from shared.db.models import OutboxMessage
from shared.events import DeadLetter, utcnow
from shared.kafka import MAX_MESSAGE_BYTES, ensure_topics
from shared.signing import SIGNATURE_HEADER, sign
from tests.conftest import POSTGRES_URL
from tests.e2e.fault_plan import Plan, make_plan
from tests.e2e.outcomes import (
    Run,
    Target,
    alerting_env,
    at_least,
    check_database,
    check_notifications,
    read_all,
    shadowed_records,
    stored,
    wait_until,
)
from tests.procs import Pipeline, Proc, database, service_env

pytestmark = [
    pytest.mark.slow,
    pytest.mark.postgres,
    pytest.mark.timeout(600),
    pytest.mark.skipif(not POSTGRES_URL, reason="needs THIRDRING_TEST_POSTGRES_URL"),
]

N_POSTS = int(os.environ.get("THIRDRING_FAULT_POSTS", "10000"))
SEED = int(os.environ.get("THIRDRING_FAULT_SEED") or random.randrange(10**6))
PARTITIONS = 12
DEADLINE = 480.0  # seconds for the whole run to settle; a hang fails the test instead

# Secrets configured for this run; none may appear in any log line.
WEBHOOK_SECRET = "ingest-secret-" + "7f3a9c2e51b04d8e"
NOTIFY_SECRET = "notify-secret-" + "c0ffee12deadbeef"
URL_TOKEN = "url-token-" + "5e1d0a9b77c3f214"  # a credential in the target's URL, like Slack's


# ---------------------------------------------------------------------------- the target


# ---------------------------------------------------------------------------- bad records


@dataclass
class BadRecord:
    topic: str
    value: bytes | None
    reason: str  # a part of the reason the dead letter must give
    stage: str
    partition: int = -1
    offset: int = -1

    @property
    def key(self) -> bytes:
        # One key per topic, so classify's and alert's letters land on different partitions
        # of the dead-letter topic (see the module's note on Tansu and concurrent writers).
        return f"faults:bad-{self.stage}".encode()


def bad_records(raw_topic: str, scored_topic: str, good: dict[str, Any]) -> list[BadRecord]:
    too_long = json.dumps({**good, "external_id": "dlq-too-long", "text": "y" * 25_000})
    return [
        BadRecord(raw_topic, b"\xff\xfe{not json", "invalid event", "classify"),
        BadRecord(raw_topic, b'{"not": "a mention"}', "source: Field required", "classify"),
        BadRecord(raw_topic, too_long.encode(), "text: String should have at most", "classify"),
        BadRecord(raw_topic, None, "empty record value", "classify"),
        # Over the services' own message limit: the letter must still be written.
        BadRecord(raw_topic, b"[" + b"1," * 700_000 + b"1]", "invalid event", "classify"),
        BadRecord(scored_topic, b"{]", "invalid event", "alert"),
        BadRecord(scored_topic, json.dumps(good).encode(), "mention: Field required", "alert"),
    ]


async def feed_bad_records(bootstrap: str, records: list[BadRecord]) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", max_request_size=4 * MAX_MESSAGE_BYTES
    )
    await producer.start()
    try:
        for r in records:
            meta = await producer.send_and_wait(r.topic, r.value, key=r.key)
            r.partition, r.offset = meta.partition, meta.offset
    finally:
        await producer.stop()


# ---------------------------------------------------------------------------- the run


async def restart_after_kill(proc: Proc, run: Run, rng: random.Random) -> None:
    proc.kill()
    pause = rng.uniform(0.5, 2.0)
    run.note(f"kill -9 {proc.name} (pid {proc.pid}); restart in {pause:.1f}s")
    await asyncio.sleep(pause)
    proc.start()


async def send_webhooks(
    url: str, plan: Plan, run: Run, start: asyncio.Event, killed: asyncio.Event
) -> None:
    """Post the webhook conversations in signed batches, each retried until accepted
    (a sender that gets no 202 sends again; duplicates are dropped by event id)."""
    await start.wait()  # after the replay: one writer at a time on mentions.raw
    async with httpx.AsyncClient(timeout=10) as client:
        # Refused before anything is published: bad signature, broken body, too large.
        body = json.dumps([p.contract() for p in plan.webhook_batches[0]]).encode()
        refusals = {
            401: (body, "sha256=" + "0" * 64),
            422: (b'{"source": "faults"}', sign(b'{"source": "faults"}', WEBHOOK_SECRET)),
            413: (b" " * (MAX_MESSAGE_BYTES + 1), "sha256=00"),
        }
        for status, (content, signature) in refusals.items():
            resp = await client.post(url, content=content, headers={SIGNATURE_HEADER: signature})
            assert resp.status_code == status, (status, resp.status_code, resp.text)
        for i, batch in enumerate(plan.webhook_batches):
            body = json.dumps([p.contract() for p in batch]).encode()
            while True:
                try:
                    resp = await client.post(
                        url, content=body, headers={SIGNATURE_HEADER: sign(body, WEBHOOK_SECRET)}
                    )
                    run.webhook_statuses[resp.status_code] += 1
                    if resp.status_code == 202:
                        break
                except httpx.HTTPError:
                    run.webhook_statuses[0] += 1
                await asyncio.sleep(0.3)
            if i == len(plan.webhook_batches) // 3:
                killed.set()  # the ingest kill happens now, in the middle of the sending
            await asyncio.sleep(0.15)
    run.note(f"webhook: {len(plan.webhook_batches)} batches accepted {dict(run.webhook_statuses)}")


async def drive_faults(
    pipeline: Pipeline,
    broker: EmbeddedBroker,
    target: Target,
    engine: AsyncEngine,
    total: int,
    run: Run,
    webhook_start: asyncio.Event,
    webhook_midway: asyncio.Event,
) -> None:
    """The faults, each at a random point of progress (stored / total)."""
    rng = random.Random(run.seed)
    procs = pipeline.procs

    # One writer at a time on mentions.raw: the replay first, then the webhook.
    await wait_until(lambda: not procs["replay"].running, pipeline, run, "replay ends", 120)
    run.note(f"replay ended with {procs['replay'].proc and procs['replay'].proc.returncode}")
    webhook_start.set()

    async def ingest_kill() -> None:
        await webhook_midway.wait()
        await restart_after_kill(procs["ingest"], run, rng)

    async def outage(seconds: float) -> None:
        run.note(f"target answers 503 for {seconds:.0f}s")
        target.failing(True)
        await asyncio.sleep(seconds)
        target.failing(False)
        run.note(f"target gone (connection refused) for {seconds:.0f}s")
        target.down()
        await asyncio.sleep(seconds)
        target.up()
        run.note("target back")

    async def broker_restart() -> None:
        pause = rng.uniform(1.0, 3.0)
        run.note(f"broker stop (records and offsets in its bucket); start in {pause:.1f}s")
        await asyncio.to_thread(broker.stop)
        await asyncio.sleep(pause)
        await asyncio.to_thread(broker.start)
        run.note("broker up again")

    side = [asyncio.create_task(ingest_kill())]
    faults: list[tuple[str, Callable[[], Any]]] = [
        ("kill classify", lambda: restart_after_kill(procs["classify"], run, rng)),
        ("kill classify", lambda: restart_after_kill(procs["classify"], run, rng)),
        ("kill alert", lambda: restart_after_kill(procs["alert"], run, rng)),
        ("kill alert", lambda: restart_after_kill(procs["alert"], run, rng)),
        ("restart broker", broker_restart),
        ("target down", lambda: side.append(asyncio.create_task(outage(6)))),
    ]
    rng.shuffle(faults)
    points = sorted(rng.uniform(0.05, 0.8) for _ in faults)
    for (name, act), point in zip(faults, points, strict=True):
        await wait_until(
            lambda p=point: at_least(stored(engine), p * total), pipeline, run, name, DEADLINE
        )
        run.note(f"{name} at {point:.0%} stored")
        result = act()
        if asyncio.iscoroutine(result):
            await result
    await asyncio.gather(*side)


# ---------------------------------------------------------------------------- the test


async def test_pipeline_loses_nothing_and_doubles_nothing_under_faults(tmp_path: Path) -> None:
    run = Run(SEED)
    run.note(f"seed {SEED} (THIRDRING_FAULT_SEED={SEED} repeats this run), {N_POSTS} posts")
    broker = EmbeddedBroker(tmp_path / "broker", durable=True).start()
    target = Target(URL_TOKEN)
    try:
        async with database(POSTGRES_URL, tmp_path) as db_url:
            await _run_and_check(tmp_path, broker, target, db_url, run)
    finally:
        target.stop()
        broker.stop()


async def _run_and_check(
    tmp_path: Path,
    broker: EmbeddedBroker,
    target: Target,
    db_url: str,
    run: Run,
) -> None:
    topics = {"raw": "mentions.raw", "scored": "mentions.scored", "dlq": "mentions.dlq"}
    await ensure_topics(broker.bootstrap_servers, list(topics.values()), PARTITIONS)
    env = service_env(
        broker.bootstrap_servers,
        db_url,
        tmp_path,
        THIRDRING_PARTITIONS=str(PARTITIONS),
        THIRDRING_WEBHOOK_SECRET=WEBHOOK_SECRET,
        **alerting_env(tmp_path, target, NOTIFY_SECRET),
    )
    pipeline = Pipeline(tmp_path, env)
    ingest = pipeline.add("ingest", "run", "ingest", port_var="THIRDRING_INGEST_PORT")
    classify = pipeline.add("classify", "run", "classify", port_var="THIRDRING_CLASSIFY_PORT")
    alert = pipeline.add("alert", "run", "alert", port_var="THIRDRING_API_PORT")
    replay_file = tmp_path / "posts.jsonl"
    replay = pipeline.add("replay", "replay", str(replay_file))
    engine = make_engine(db_url)
    try:
        with pipeline.running():
            await pipeline.start(alert, classify, ingest)
            run.note("services ready")

            # The plan is made now, so the fast deadlines fall due during the faults.
            plan = make_plan(N_POSTS, utcnow(), seed=run.seed)
            replay_file.write_text("\n".join(plan.lines) + "\n")
            good = plan.posts[0].contract()
            bad = bad_records(topics["raw"], topics["scored"], good)
            # Before any post: the only writer on the topics (see the note on Tansu).
            await feed_bad_records(broker.bootstrap_servers, bad)
            run.note(f"fed {len(bad)} bad records")

            replay.start()
            webhook_start, webhook_midway = asyncio.Event(), asyncio.Event()
            hook_url = f"http://127.0.0.1:{ingest.health_port}/api/v1/ingest/webhook"
            tasks = [
                asyncio.create_task(
                    send_webhooks(hook_url, plan, run, webhook_start, webhook_midway)
                ),
                asyncio.create_task(
                    drive_faults(
                        pipeline,
                        broker,
                        target,
                        engine,
                        len(plan.posts),
                        run,
                        webhook_start,
                        webhook_midway,
                    )
                ),
            ]
            try:
                await _settle(pipeline, plan, engine, target, replay, run, tasks)
            except AssertionError as exc:
                # Posts that never arrive: say whether the broker's own files lost them.
                shadowed = shadowed_records(broker.data_dir / "bucket")
                raise AssertionError(f"{exc}\nTansu overlapping batches: {shadowed}") from None
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
            metrics = await _scrape(classify, alert)
            codes = pipeline.stop()
            run.note(f"stopped with SIGTERM: {codes}")
    finally:
        await engine.dispose()

    shadowed = shadowed_records(broker.data_dir / "bucket")
    assert not shadowed, (
        f"Tansu's storage lost acknowledged records (overlapping batches): {shadowed}"
    )
    letters = await read_all(broker.bootstrap_servers, topics["dlq"])
    _check_replay(replay, plan)
    opened = await check_database(db_url, plan, run)
    # A resent copy only where a kill -9 fell between a send and its record.
    check_notifications(target, plan, NOTIFY_SECRET, max_copies=alert.kills, run=run)
    _check_dead_letters(letters, bad)
    _check_logs(pipeline, db_url, opened)
    _check_metrics(metrics)
    assert codes == {"ingest": 0, "classify": 0, "alert": 0}, (codes, run.events)


async def _settle(
    pipeline: Pipeline,
    plan: Plan,
    engine: AsyncEngine,
    target: Target,
    replay: Proc,
    run: Run,
    tasks: list[asyncio.Task[None]],
) -> None:
    """Until the faults are over and everything due has happened."""
    total = len(plan.posts)
    expected = plan.expected_notifications()

    def faults_done() -> bool:
        for t in tasks:
            if t.done():
                t.result()  # re-raises a failure of the driver or the sender
        return all(t.done() for t in tasks)

    await wait_until(faults_done, pipeline, run, "faults", DEADLINE)
    await wait_until(lambda: at_least(stored(engine), total), pipeline, run, "all stored", 300)
    run.note(f"all {total} posts stored")

    def delivered() -> bool:
        got = {
            (r.json()["case"]["conversation_id"], r.json()["stage_id"]) for r in target.requests()
        }
        return expected <= got

    await wait_until(delivered, pipeline, run, "notifications", 240)
    run.note(f"all {len(expected)} notifications delivered")

    async def outbox_drained() -> bool:
        async with engine.connect() as conn:
            rows = await conn.execute(
                select(func.count())
                .select_from(OutboxMessage)
                .where(OutboxMessage.status != "sent")
            )
            return rows.scalar_one() == 0

    await wait_until(outbox_drained, pipeline, run, "outbox drained", 120)
    await asyncio.sleep(2.0)  # time for a late duplicate to show up, were there one


async def _scrape(*procs: Proc) -> dict[str, str]:
    out = {}
    async with httpx.AsyncClient(timeout=10) as client:
        for p in procs:
            resp = await client.get(f"http://127.0.0.1:{p.health_port}/metrics")
            assert resp.status_code == 200, (p.name, resp.status_code, resp.text[:500])
            out[p.name] = resp.text
            (p.log.parent / f"{p.name}.metrics").write_text(resp.text)  # for a failing run
    return out


# ---------------------------------------------------------------------------- the checks


def _check_replay(replay: Proc, plan: Plan) -> None:
    text = replay.log.read_text(errors="replace")
    reports = re.findall(r"read (\d+), published (\d+), duplicates (\d+), errors (\d+)", text)
    assert reports, replay.tail()
    read, published, duplicates, errors = (int(x) for x in reports[-1])
    file_posts = sum(len(c.posts) for c in plan.conversations if c.via == "replay")
    assert read == len(plan.lines) and errors == len(plan.broken_lines), reports
    assert (published, duplicates) == (file_posts, 0), reports
    for line in plan.broken_lines:
        assert f"line {line}:" in text, (line, replay.tail())
    assert replay.proc is not None and replay.proc.returncode == 1  # broken lines: exit 1


def _check_dead_letters(letters: list[Any], bad: list[BadRecord]) -> None:
    found: dict[tuple[str, int, int], list[DeadLetter]] = defaultdict(list)
    for record in letters:
        letter = DeadLetter.model_validate_json(record.value)
        found[(letter.topic, letter.partition or 0, letter.offset or 0)].append(letter)
    want = {(b.topic, b.partition, b.offset): b for b in bad}
    # Every bad record is there (a redelivery may write its letter twice), nothing else is.
    assert set(found) == set(want), (sorted(found), sorted(want))
    for key, b in want.items():
        for letter in found[key]:
            assert b.reason in letter.reason, (b.reason, letter.reason)
            assert letter.stage == b.stage
            original = base64.b64decode(letter.original_b64)
            if b.value is not None and len(b.value) < MAX_MESSAGE_BYTES // 2:
                assert original == b.value


def _check_logs(pipeline: Pipeline, db_url: str, opened: dict[str, int]) -> None:
    """JSON lines only; every post that opened a response cycle has a line with its event
    id and the case id it got (the last line per event: a killed process may have logged
    one for a transaction that never committed); no configured secret anywhere."""
    url = make_url(db_url)
    secrets = [WEBHOOK_SECRET, NOTIFY_SECRET, URL_TOKEN, f"{url.username}:{url.password}@"]
    logged: dict[str, int] = {}
    for p in pipeline.procs.values():
        text = p.log.read_text(errors="replace")
        for secret in secrets:
            assert secret not in text, f"a secret is in the log of {p.name}"
        if p.args[0] != "run":
            continue
        for line in text.splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                raise AssertionError(f"{p.name}: not a JSON log line: {line[:300]}") from None
            action = entry["msg"].split(": ")[-1].split(" ")[0]
            if p.name == "alert" and action in ("opened", "next_cycle") and "event_id" in entry:
                logged[entry["event_id"]] = entry["case_id"]
    assert logged == opened


def _metric(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return None


def _check_metrics(metrics: dict[str, str]) -> None:
    """Each consumer reports its metrics; at the end it holds every partition and has
    nothing left to do. (Counts are per process: the last one started may have had nothing
    to consume, so only the families must be there.)"""
    for name, topic in (("classify", "mentions.raw"), ("alert", "mentions.scored")):
        text = metrics[name]
        mine = {"consumer": name}
        ours = "\n".join(line for line in text.splitlines() if "thirdring_consumer_" in line)
        held = _metric(text, "thirdring_consumer_assigned_partitions", **mine)
        assert held == PARTITIONS, ours
        assert _metric(text, "thirdring_consumer_lag", **mine, topic=topic) == 0, ours
        for family, kind in (
            ("records_total", "counter"),
            ("batch_size", "histogram"),
            ("batch_seconds", "histogram"),
            ("dead_letters_total", "counter"),
            ("errors_total", "counter"),
        ):
            assert f"# TYPE thirdring_consumer_{family} {kind}" in text, (family, ours)
