"""What a run of the fault plan (``fault_plan.py``) must end as, checked against the
database and the notification target; the alerting file, the target and the waiting that
the tests on separate processes share."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db.engine import make_engine
from shared.db.models import Case, Deadline, Mention, OutboxMessage, ResponseCycle
from shared.kafka import MAX_MESSAGE_BYTES
from shared.signing import SIGNATURE_HEADER, verify
from tests.e2e.fault_plan import BRAND, FAST, FAST_TARGET, SLOW_TARGET, Plan
from tests.http_receiver import HttpReceiver
from tests.kafka_reader import wait_for
from tests.procs import Pipeline


def write_alerting(path: Path, fast_target: float = FAST_TARGET) -> Path:
    """The policies the plan is made for: every priority has the same target."""
    every = ("P1", "P2", "P3", "P4")
    config = {
        "policies": [
            {
                "name": "fast",
                "when": {"source": [FAST]},
                "targets": dict.fromkeys(every, fast_target),
                "warn_at": [0.5],
                "escalation": [{"after_seconds": 5, "notify": "team"}],
            },
            {
                "name": "slow",
                "targets": dict.fromkeys(every, SLOW_TARGET),
                "warn_at": [0.5],
                "escalation": [],
            },
        ],
        "default_channels": ["webhook"],
    }
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


def alerting_env(
    workdir: Path, target: Target, secret: str, fast_target: float = FAST_TARGET
) -> dict[str, str]:
    """What the alert service needs for the plan: its policies, the target, fast timers,
    and retries that outlast an outage (none goes dead) and a killed replica (short lease)."""
    return {
        "THIRDRING_ALERTING_FILE": str(write_alerting(workdir / "alerting.yaml", fast_target)),
        "THIRDRING_NOTIFY_WEBHOOK_URL": target.url,
        "THIRDRING_NOTIFY_WEBHOOK_SECRET": secret,
        "THIRDRING_SCHEDULER_INTERVAL": "0.2",
        "THIRDRING_OUTBOX_INTERVAL": "0.2",
        "THIRDRING_NOTIFY_BACKOFF_BASE": "0.2",
        "THIRDRING_NOTIFY_BACKOFF_MAX": "2",
        "THIRDRING_NOTIFY_MAX_ATTEMPTS": "1000",
        "THIRDRING_NOTIFY_LEASE_SECONDS": "12",
    }


class Target:
    """The notification target: a real HTTP server on loopback that can answer 503 for a
    while, or go away altogether (connection refused) and come back on the same port."""

    def __init__(self, token: str = "hook") -> None:
        self.receiver = HttpReceiver().start()
        assert self.receiver._server is not None
        self.port = int(self.receiver._server.server_address[1])
        self.handler = self.receiver._server.RequestHandlerClass
        # The token stands for a credential in the URL (as in Slack's): never to be logged.
        self.url = f"http://127.0.0.1:{self.port}/hook/{token}"

    def failing(self, on: bool) -> None:
        with self.receiver._lock:
            self.receiver.fail_next = 10**9 if on else 0

    def down(self) -> None:
        self.receiver.stop()

    def up(self) -> None:
        server = ThreadingHTTPServer(("127.0.0.1", self.port), self.handler)
        self.receiver._server = server
        threading.Thread(target=server.serve_forever, daemon=True).start()

    def requests(self) -> list[Any]:
        with self.receiver._lock:
            return list(self.receiver.requests)

    def stop(self) -> None:
        self.receiver.stop()


@dataclass
class Run:
    """What happened during the run, for the checks and for the failure message."""

    seed: int
    events: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    webhook_statuses: Counter[int] = field(default_factory=Counter)

    def note(self, what: str) -> None:
        line = f"{time.monotonic() - self.started:7.1f}s {what}"
        self.events.append(line)
        print(line, flush=True)


async def read_all(bootstrap: str, topic: str, timeout: float = 60.0) -> list[ConsumerRecord]:
    """Every record of ``topic`` up to its end now (no consumer group: nothing to join).

    The end is the high watermark of the fetches, not ListOffsets: Tansu 0.6 on S3 storage
    answers ListOffsets(latest) wrongly after a restart (far below the real end)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        max_partition_fetch_bytes=4 * MAX_MESSAGE_BYTES,
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(partitions)
        for tp in partitions:
            consumer.seek(tp, 0)
        records: list[ConsumerRecord] = []
        async with asyncio.timeout(timeout):
            while True:
                for batch in (await consumer.getmany(timeout_ms=500)).values():
                    records.extend(batch)
                behind = [
                    tp
                    for tp in partitions
                    if (end := consumer.highwater(tp)) is None or await consumer.position(tp) < end
                ]
                if not behind:
                    return records
    finally:
        await consumer.stop()


def shadowed_records(bucket: Path) -> list[str]:
    """Records a durable Tansu (S3 engine, files under ``bucket``) can no longer return: a
    batch stored at an offset the previous batch of the partition still covers."""
    found = []
    for records in sorted(bucket.glob("*/clusters/*/topics/*/partitions/*/records")):
        end = -1
        for path in sorted(records.iterdir()):
            base = int(path.name.split(".")[0])
            # A v2 record batch: the last offset delta is at bytes 23..27 of its header.
            last = base + int.from_bytes(path.read_bytes()[23:27], "big", signed=True)
            if base <= end:
                found.append(f"{records.parent.parent.parent.name}[{records.parent.name}]@{base}")
            end = max(end, last)
    return found


async def stored(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(Mention))).scalar_one())


async def wait_until(
    check: Callable[[], Any], pipeline: Pipeline, run: Run, what: str, timeout: float
) -> None:
    """Poll ``check`` (sync or async); a service that dies on its own fails the test."""

    async def guarded() -> object:
        crashed = pipeline.crashed()
        assert not crashed, "\n".join(run.events + crashed)
        result = check()
        return await result if asyncio.iscoroutine(result) else result

    try:
        await wait_for(guarded, timeout)
    except AssertionError as exc:
        if "condition not met" not in str(exc):
            raise
        tails = "\n".join(p.tail(20) for p in pipeline.procs.values())
        raise AssertionError(
            f"{what}: not within {timeout:.0f}s\n" + "\n".join(run.events) + "\n" + tails
        ) from None


async def at_least(count: Any, n: float) -> bool:
    return (await count) >= n


async def check_database(db_url: str, plan: Plan, run: Run) -> dict[str, int]:
    """Every post stored once; every case, cycle, deadline and outbox row as the plan says.
    Returns the case id of each post that opened a cycle (to check the logs against)."""
    engine = make_engine(db_url)
    try:
        async with engine.connect() as conn:
            mentions = (await conn.execute(select(Mention))).all()
            cases = (await conn.execute(select(Case))).all()
            cycles = (await conn.execute(select(ResponseCycle))).all()
            deadlines = (await conn.execute(select(Deadline))).all()
            outbox = (await conn.execute(select(OutboxMessage))).all()
    finally:
        await engine.dispose()

    # Every post stored, once (event_id is the primary key: count and set say it all).
    posts = {p.event_id: p for p in plan.posts}
    assert len(mentions) == len(posts)
    assert {m.event_id for m in mentions} == set(posts)
    priority = {m.event_id: m.priority for m in mentions}

    convs = plan.by_conversation()
    by_conv = {c.conversation_id: c for c in cases}
    assert set(by_conv) == {c.id for c in plan.conversations if c.has_case}
    cycles_of: dict[int, list[Any]] = defaultdict(list)
    for cy in sorted(cycles, key=lambda cy: cy.seq):
        cycles_of[cy.case_id].append(cy)
    deadlines_of: dict[int, dict[str, str]] = defaultdict(dict)
    for d in deadlines:
        deadlines_of[d.cycle_id][d.stage] = d.status

    wrong: list[str] = []
    for conv_id, case in by_conv.items():
        conv = convs[conv_id]
        got = cycles_of[case.id]
        want_response = conv.response_seconds()
        problems = []
        if case.status != conv.status:
            problems.append(f"status {case.status}")
        if case.brand != BRAND or case.source != conv.source:
            problems.append(f"brand/source {case.brand}/{case.source}")
        if case.opened_at != conv.customer_posts()[0].created_at:
            problems.append(f"opened_at {case.opened_at}")
        if len(got) != conv.cycles or case.cycles != conv.cycles:
            problems.append(f"cycles {len(got)}/{case.cycles}")
        groups = _cycle_posts(conv)
        for cy, want, members in zip(got, want_response, groups, strict=False):
            if cy.started_at != members[0].created_at or cy.started_event_id != members[0].event_id:
                problems.append(f"cycle {cy.seq} start {cy.started_at}")
            if cy.response_seconds != want and not (
                want is not None and cy.response_seconds == pytest.approx(want)
            ):
                problems.append(f"cycle {cy.seq} response {cy.response_seconds} != {want}")
            # Follow-ups can only raise a cycle's priority: it ends as the most urgent post's.
            top = min(priority[p.event_id] for p in members)
            if cy.priority != top:
                problems.append(f"cycle {cy.seq} priority {cy.priority} != {top}")
            target = plan.fast_target if conv.source == FAST else SLOW_TARGET
            if cy.target_seconds != target:
                problems.append(f"cycle {cy.seq} target {cy.target_seconds}")
            stages = deadlines_of[cy.id]
            if conv.breached:
                want_stages = dict.fromkeys(conv.stages, "fired")
            elif cy.answered_at is not None:
                want_stages = {"warning:0.5": "cancelled", "breach": "cancelled"}
            else:
                want_stages = {"warning:0.5": "pending", "breach": "pending"}
            if stages != want_stages:
                problems.append(f"cycle {cy.seq} deadlines {stages}")
            if cy.breached != conv.breached:
                problems.append(f"cycle {cy.seq} breached {cy.breached}")
        if got and case.priority != got[-1].priority:
            problems.append(f"case priority {case.priority} != last cycle {got[-1].priority}")
        if problems:
            wrong.append(f"{conv_id} ({conv.kind}): " + "; ".join(problems))
    assert not wrong, f"{len(wrong)} cases wrong, e.g.\n" + "\n".join(wrong[:20])

    conv_of = {c.id: c.conversation_id for c in cases}
    rows = Counter((conv_of[o.case_id], o.stage, o.status) for o in outbox)
    assert all(n == 1 for n in rows.values())
    assert {(c, s) for c, s, _ in rows} == plan.expected_notifications()
    assert {s for _, _, s in rows} == {"sent"}
    run.note(f"database: {len(mentions)} mentions, {len(cases)} cases, {len(outbox)} alerts")
    return {cy.started_event_id: cy.case_id for cy in cycles}


def _cycle_posts(conv: Any) -> list[list[Any]]:
    """The customer posts of each response cycle, in time order."""
    groups: list[list[Any]] = []
    waiting = False
    for p in sorted(conv.posts, key=lambda p: p.created_at):
        if p.is_brand:
            waiting = False
        elif waiting:
            groups[-1].append(p)
        else:
            groups.append([p])
            waiting = True
    return groups


def check_notifications(target: Target, plan: Plan, secret: str, max_copies: int, run: Run) -> None:
    """Each due alert delivered exactly once per case and stage (after deduplication by the
    delivery id), signed, in order per case; at most ``max_copies`` resent copies."""
    requests = target.requests()
    by_delivery: dict[str, list[Any]] = defaultdict(list)
    for r in requests:
        assert verify(r.body, secret, r.headers[SIGNATURE_HEADER.lower()])
        by_delivery[r.headers["x-thirdring-delivery"]].append(r)
    deliveries: dict[tuple[str, str], set[str]] = defaultdict(set)
    for delivery, copies in by_delivery.items():
        # A copy is the same message: same body, byte for byte.
        assert len({c.body for c in copies}) == 1, delivery
        body = copies[0].json()
        assert body["case"]["brand"] == BRAND and body["case"]["source"] == FAST
        deliveries[(body["case"]["conversation_id"], body["stage_id"])].add(delivery)
    # Exactly once per case and stage, after deduplication by the delivery id...
    assert set(deliveries) == plan.expected_notifications()
    assert all(len(ids) == 1 for ids in deliveries.values())
    # ...and a copy only where a kill -9 fell between a send and its record.
    copies = len(requests) - len(by_delivery)
    run.note(f"target: {len(requests)} requests, {len(by_delivery)} deliveries, {copies} copies")
    assert copies <= max_copies
    # Per case, in order: warning, breach, escalation.
    order: dict[str, list[str]] = defaultdict(list)
    seen: set[str] = set()
    for r in requests:
        delivery = r.headers["x-thirdring-delivery"]
        if delivery not in seen:
            seen.add(delivery)
            order[r.json()["case"]["conversation_id"]].append(r.json()["stage_id"])
    assert all(v == ["warning:0.5", "breach", "escalation:1"] for v in order.values())
