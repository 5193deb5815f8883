"""Alert service benchmark: SLA timer precision with many open cases, and outbox throughput.

1. Timer precision: N open cases (each with a response cycle, its first post and 3 pending
   deadlines) are bulk-loaded; all deadlines are days away except a sample of K, which fall
   due spread over ``--window`` seconds starting ``--lead`` seconds after the loops start.
   The real scheduler loop (``every(0.25 s, fire_due)``) and the real outbox dispatcher loop
   (``every(0.25 s, dispatch_due)``, WebhookNotifier) run as in the alert worker; a loopback
   webhook target in its own process records when each alert arrives. Per sample deadline:
   fired_at - due_at (scheduler lateness) and received - due_at (due -> delivered).
2. Outbox throughput: M pending outbox rows (one per case) dispatched by one
   OutboxDispatcher to the same target: notifications per second.

    .venv/bin/python -m bench.alerts                              # PostgreSQL (default)
    .venv/bin/python -m bench.alerts --db sqlite --cases 20000

The PostgreSQL database (``--pg-url``, default thirdring_bench) is dropped and recreated per
run. Prints a table and writes bench/results/alerts.json (one entry per database).
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import logging
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from sqlalchemy import bindparam, func, insert, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from services.alert.notify.outbox import OutboxDispatcher
from services.alert.notify.payload import alert_payload
from services.alert.notify.webhook import WebhookNotifier
from services.alert.sla.scheduler import Delivery, fire_due
from shared.config import Settings
from shared.db.engine import make_engine, make_sessionmaker
from shared.db.migrate import upgrade
from shared.db.models import Case, Deadline, Mention, OutboxMessage, ResponseCycle
from shared.events import utcnow
from shared.lifecycle import every

console = Console()
log = logging.getLogger("bench.alerts")

PG_URL = "postgresql+asyncpg://thirdring:thirdring@127.0.0.1:5432/thirdring_bench"
STAGES = ("warning:0.5", "warning:0.8", "breach")
FRACTIONS = (0.5, 0.8, 1.0)
TEXT = "My order #{i} never arrived and support does not answer, I want a refund now"
# The same due-deadline query fire_due runs (scheduler.py), for EXPLAIN.
DUE_SQL = (
    "SELECT deadlines.id, deadlines.case_id, deadlines.cycle_id, deadlines.stage, "
    "deadlines.fraction, deadlines.due_at, deadlines.status, deadlines.fired_at "
    "FROM deadlines WHERE deadlines.status = 'pending' AND deadlines.due_at <= :now "
    "ORDER BY deadlines.due_at, deadlines.id LIMIT 200"
)

# The claim query of OutboxDispatcher._claim (outbox.py), for EXPLAIN.
CLAIM_SQL = (
    "SELECT outbox.id FROM outbox WHERE outbox.status = 'pending' "
    "AND outbox.next_attempt_at <= :now "
    "AND (outbox.claimed_until IS NULL OR outbox.claimed_until < :now) "
    "AND NOT (EXISTS (SELECT * FROM outbox AS outbox_1 WHERE outbox_1.case_id = outbox.case_id "
    "AND outbox_1.status = 'pending' AND outbox_1.id < outbox.id)) "
    "ORDER BY outbox.id LIMIT 50"
)


def progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def summary(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"n": 0, "p50": None, "p99": None, "max": None, "min": None, "mean": None}
    return {
        "n": len(values),
        "min": min(values),
        "p50": pct(values, 50),
        "p99": pct(values, 99),
        "max": max(values),
        "mean": sum(values) / len(values),
    }


# --------------------------------------------------------------------------- database


async def recreate_postgres(url: str) -> None:
    import asyncpg

    u = make_url(url)
    name, owner = u.database, u.username
    try:
        conn = await asyncpg.connect(
            user=owner, password=u.password, host=u.host, port=u.port or 5432, database="postgres"
        )
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await conn.execute(f'CREATE DATABASE "{name}" OWNER "{owner}"')
        finally:
            await conn.close()
    except asyncpg.PostgresError as exc:  # the role cannot create databases: ask postgres
        console.print(f"[yellow]{exc}; recreating {name} as the postgres user")
        for sql in (
            f"drop database if exists {name} with (force)",
            f"create database {name} owner {owner}",
        ):
            cmd = ["su", "postgres", "-c", f'psql -qc "{sql}"']
            await asyncio.to_thread(subprocess.run, cmd, check=True)


async def db_version(engine: AsyncEngine) -> str:
    async with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            return "PostgreSQL " + str(await conn.scalar(text("show server_version")))
        return "SQLite " + str(await conn.scalar(text("select sqlite_version()")))


ANALYZE = {"postgresql": True, "sqlite": False}


async def analyze(engine: AsyncEngine, table: str | None = None) -> None:
    """Refresh planner statistics where the deployment would have them.

    PostgreSQL: autovacuum analyzes tables after bulk changes, so fresh statistics are the
    steady state. SQLite: nothing in thirdring runs ANALYZE, so by default there are none
    (``--analyze yes`` adds them; see the outbox claim plan in the results).
    """
    if not ANALYZE[engine.dialect.name]:
        return
    async with engine.begin() as conn:
        await conn.execute(text(f"ANALYZE {table or ''}"))
    if engine.dialect.name == "sqlite":
        # A SQLite connection reads sqlite_stat1 when it opens: reopen them all.
        await engine.dispose()


# --------------------------------------------------------------------------- load


def case_rows(lo: int, hi: int, now: datetime, rng: random.Random) -> dict[str, list[dict]]:
    """Rows for cases lo..hi-1 (0-based): ids are index + 1; deadline ids 3 * index + j + 1."""
    cases, cycles, mentions, deadlines = [], [], [], []
    for i in range(lo, hi):
        cid = i + 1
        opened = now - timedelta(seconds=rng.uniform(60, 3600))
        event_id = str(uuid.UUID(int=cid))
        # Far in the future: the breach 1-30 days away, the warnings at their fractions.
        target = rng.uniform(86_400, 30 * 86_400)
        priority = ("P1", "P2", "P3")[i % 3]
        cases.append(
            {
                "id": cid,
                "conversation_id": f"bench:conv:{cid}",
                "brand": ("acme", "globex", "initech")[i % 3],
                "source": ("x", "bluesky", "reddit", "mastodon")[i % 4],
                "status": "open",
                "priority": priority,
                "opened_at": opened,
                "answered_at": None,
                "reply_url": None,
                "cycles": 1,
                "created_at": opened,
                "updated_at": opened,
                "language": "en",
                "vip": False,
                "intents": None,
            }
        )
        cycles.append(
            {
                "id": cid,
                "case_id": cid,
                "seq": 1,
                "started_at": opened,
                "started_event_id": event_id,
                "kind": "first",
                "priority": priority,
                "target_seconds": target,
                "business_time": False,
                "paused_seconds": 0.0,
                "paused_at": None,
                "due_at": opened + timedelta(seconds=target),
                "answered_at": None,
                "answered_event_id": None,
                "response_seconds": None,
                "breached": False,
            }
        )
        mentions.append(
            {
                "event_id": event_id,
                "source": cases[-1]["source"],
                "external_id": str(cid),
                "conversation_id": f"bench:conv:{cid}",
                "brand": cases[-1]["brand"],
                "author_id": f"user{cid % 9973}",
                "is_brand": False,
                "text": TEXT.format(i=cid),
                "url": f"https://example.com/p/{cid}",
                "created_at": opened,
                "ingested_at": opened,
                "stored_at": opened,
                "lang": "en",
                "sentiment": "negative",
                "negative_score": 0.91,
                "complaint_score": 0.87,
                "urgency_score": 0.64,
                "priority": priority,
                "reasons": {"reasons": ["negative sentiment", "complaint: delivery"]},
                "model_version": "bench",
                "author_vip": False,
                "author_followers": 120,
            }
        )
        for j, (stage, fraction) in enumerate(zip(STAGES, FRACTIONS, strict=True)):
            deadlines.append(
                {
                    "id": 3 * i + j + 1,
                    "case_id": cid,
                    "cycle_id": cid,
                    "stage": stage,
                    "fraction": fraction,
                    "due_at": opened + timedelta(seconds=target * fraction),
                    "status": "pending",
                    "fired_at": None,
                }
            )
    return {"cases": cases, "cycles": cycles, "mentions": mentions, "deadlines": deadlines}


async def load_cases(engine: AsyncEngine, n: int, chunk: int, seed: int) -> dict[str, Any]:
    """Bulk-insert n open cases (executemany in chunks, one transaction per chunk)."""
    rng = random.Random(seed)
    now = utcnow()
    tables = {
        "cases": Case.__table__,
        "cycles": ResponseCycle.__table__,
        "mentions": Mention.__table__,
        "deadlines": Deadline.__table__,
    }
    start = time.perf_counter()
    rows = 0
    with progress() as bar:
        task = bar.add_task(f"loading {n:,} open cases", total=n)
        for lo in range(0, n, chunk):
            hi = min(n, lo + chunk)
            batch = case_rows(lo, hi, now, rng)
            async with engine.begin() as conn:
                for key, table in tables.items():
                    await conn.execute(insert(table), batch[key])
                    rows += len(batch[key])
            bar.update(task, completed=hi)
    if engine.dialect.name == "postgresql":
        # Explicit ids were given: move the sequences past them.
        async with engine.begin() as conn:
            for table in ("cases", "response_cycles", "deadlines"):
                await conn.execute(
                    text(
                        f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                        f"(SELECT max(id) FROM {table}))"
                    )
                )
    seconds = time.perf_counter() - start
    await analyze(engine)
    return {"cases": n, "rows": rows, "seconds": seconds, "rows_per_s": rows / seconds}


# --------------------------------------------------------------------------- explain


async def explain(engine: AsyncEngine, query: str, lock: str) -> list[str]:
    """EXPLAIN (ANALYZE, BUFFERS) on PostgreSQL (rolled back), EXPLAIN QUERY PLAN on SQLite."""
    now = utcnow()
    async with engine.connect() as conn:
        trans = await conn.begin()
        if engine.dialect.name == "postgresql":
            sql = f"EXPLAIN (ANALYZE, BUFFERS) {query} FOR UPDATE OF {lock} SKIP LOCKED"
            plan = [r[0] for r in await conn.execute(text(sql), {"now": now})]
        else:
            naive = now.astimezone(UTC).replace(tzinfo=None)
            rows = await conn.execute(text("EXPLAIN QUERY PLAN " + query), {"now": naive})
            plan = [str(r[-1]) for r in rows]
        await trans.rollback()
    return plan


async def explain_due(engine: AsyncEngine) -> dict[str, Any]:
    """The plan of fire_due's query with nothing due (the common, idle tick)."""
    plan = await explain(engine, DUE_SQL, "deadlines")
    return {
        "query": DUE_SQL,
        "plan": plan,
        "uses_index": "ix_deadlines_status_due_at" in "\n".join(plan),
    }


# --------------------------------------------------------------------------- receiver


class Receiver:
    """The webhook target, a child process (python -m bench.alerts.receiver)."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.alerts.receiver"],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        port = int(self.proc.stdout.readline())
        self.base = f"http://127.0.0.1:{port}"
        self.url = f"{self.base}/hook"
        self.client = httpx.AsyncClient(timeout=30)

    async def records(self) -> list[tuple[float, str, int | None, str | None]]:
        resp = await self.client.get(f"{self.base}/records")
        return [tuple(r) for r in resp.json()]  # type: ignore[misc]

    async def reset(self) -> None:
        await self.client.post(f"{self.base}/reset")

    async def close(self) -> None:
        await self.client.aclose()
        self.proc.terminate()
        self.proc.wait(timeout=10)


def dispatcher_for(
    sessions: async_sessionmaker[AsyncSession],
    notifier: WebhookNotifier,
    batch: int,
    cls: type[OutboxDispatcher] = OutboxDispatcher,
) -> OutboxDispatcher:
    """Built as the worker builds it, with the settings' default retry policy."""
    fields = Settings.model_fields
    return cls(
        sessions,
        {"webhook": notifier},
        max_attempts=fields["notify_max_attempts"].default,
        backoff_base=fields["notify_backoff_base"].default,
        backoff_max=fields["notify_backoff_max"].default,
        batch=batch,
    )


# --------------------------------------------------------------------------- 1. timers


async def bench_timers(
    engine: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
    receiver: Receiver,
    args: argparse.Namespace,
) -> dict[str, Any]:
    rng = random.Random(args.seed + 1)
    picked = rng.sample(range(args.cases), args.sample)
    # (deadline id, case id, stage) of each sample deadline, in the order they fall due.
    sample = [(3 * i + (pos % 3) + 1, i + 1, STAGES[pos % 3]) for pos, i in enumerate(picked)]

    start = utcnow()
    due: dict[int, datetime] = {}
    for pos, (did, _, _) in enumerate(sample):
        due[did] = start + timedelta(seconds=args.lead + args.window * pos / len(sample))
    table = Deadline.__table__
    async with engine.begin() as conn:
        await conn.execute(
            update(table).where(table.c.id == bindparam("b_id")).values(due_at=bindparam("b_due")),
            [{"b_id": did, "b_due": at} for did, at in due.items()],
        )

    delivery = Delivery(default_channels=["webhook"], known_channels={"webhook"})
    ticks: list[tuple[int, float]] = []

    async def scheduler_tick() -> int:
        t0 = time.perf_counter()
        fired = await fire_due(sessions, delivery)
        ticks.append((fired, time.perf_counter() - t0))
        return fired

    notifier = WebhookNotifier(receiver.url, secret="bench-secret")
    dispatcher = dispatcher_for(sessions, notifier, batch=50)
    stop = asyncio.Event()
    loops_started = utcnow()
    tasks = [
        asyncio.create_task(every(args.interval, stop, "scheduler", scheduler_tick)),
        asyncio.create_task(every(args.interval, stop, "outbox", dispatcher.dispatch_due)),
    ]
    last_due = max(due.values())
    give_up = last_due + timedelta(seconds=args.grace)
    wanted = {(case_id, stage) for _, case_id, stage in sample}
    with progress() as bar:
        task = bar.add_task("sample alerts delivered", total=len(sample))
        while True:
            await asyncio.sleep(0.5)
            got = {(r[2], r[3]) for r in await receiver.records()} & wanted
            bar.update(task, completed=len(got))
            if len(got) >= len(wanted) or utcnow() > give_up:
                break
    stop.set()
    await asyncio.gather(*tasks)
    await notifier.close()

    async with sessions() as session:
        fired_rows = (
            await session.execute(
                select(Deadline.id, Deadline.status, Deadline.fired_at).where(
                    Deadline.id.in_(list(due))
                )
            )
        ).all()
        other_fired = await session.scalar(
            select(func.count())
            .select_from(Deadline)
            .where(Deadline.status == "fired", Deadline.id.not_in(list(due)))
        )
    received: dict[tuple[int | None, str | None], float] = {}
    for at, _, case_id, stage in await receiver.records():
        received.setdefault((case_id, stage), at)  # first delivery counts

    fire_lateness = [
        (r.fired_at - due[r.id]).total_seconds() for r in fired_rows if r.fired_at is not None
    ]
    deliver_lateness = [
        received[(case_id, stage)] - due[did].timestamp()
        for did, case_id, stage in sample
        if (case_id, stage) in received
    ]
    idle = [dt for n, dt in ticks if n == 0]
    busy = [dt for n, dt in ticks if n > 0]
    return {
        "sample": len(sample),
        "fired": len(fire_lateness),
        "delivered": len(deliver_lateness),
        "other_deadlines_fired": other_fired,
        "first_due_after_loop_start_s": (min(due.values()) - loops_started).total_seconds(),
        "fire_lateness_s": summary(fire_lateness),
        "due_to_delivered_s": summary(deliver_lateness),
        "scheduler_ticks": len(ticks),
        "idle_tick_s": summary(idle),
        "busy_tick_s": summary(busy),
        "fired_per_busy_tick_mean": (sum(n for n, _ in ticks) / len(busy) if busy else None),
    }


# --------------------------------------------------------------------------- 2. outbox


class TimedDispatcher(OutboxDispatcher):
    """The real dispatcher, timing its claim query and each HTTP send."""

    claims: list[tuple[int, float]]
    sends: list[float]

    async def _claim(self, now: datetime) -> list[OutboxMessage]:
        t0 = time.perf_counter()
        rows = await super()._claim(now)
        self.claims.append((len(rows), time.perf_counter() - t0))
        return rows

    async def _send(self, msg: OutboxMessage) -> str | None:
        t0 = time.perf_counter()
        error = await super()._send(msg)
        self.sends.append(time.perf_counter() - t0)
        return error


def payload_template() -> dict[str, Any]:
    now = utcnow()
    case = Case(id=0, conversation_id="bench:conv:0", brand="acme", source="x")
    cycle = ResponseCycle(
        seq=1,
        started_at=now,
        started_event_id=str(uuid.UUID(int=0)),
        priority="P2",
        target_seconds=3600.0,
        due_at=now + timedelta(hours=1),
    )
    post = Mention(
        text=TEXT.format(i=0),
        author_id="user0",
        url="https://example.com/p/0",
        lang="en",
        sentiment="negative",
        complaint_score=0.87,
        urgency_score=0.64,
        reasons={"reasons": ["negative sentiment", "complaint: delivery"]},
    )
    payload = alert_payload("breach", case, cycle, post, now)
    payload["case"]["team"] = None
    payload["case"]["assignee"] = None
    return payload


async def bench_outbox(
    engine: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
    receiver: Receiver,
    args: argparse.Namespace,
) -> dict[str, Any]:
    await receiver.reset()
    template = payload_template()
    now = utcnow()
    table = OutboxMessage.__table__
    with progress() as bar:
        task = bar.add_task(f"queueing {args.messages:,} outbox rows", total=args.messages)
        for lo in range(0, args.messages, 1000):
            rows = []
            for m in range(lo, min(args.messages, lo + 1000)):
                case_id = m % args.cases + 1
                payload = copy.deepcopy(template)
                payload["case"]["id"] = case_id
                payload["case"]["conversation_id"] = f"bench:conv:{case_id}"
                rows.append(
                    {
                        "case_id": case_id,
                        "cycle_id": case_id,
                        "stage": f"bench:{m // args.cases}",
                        "channel": "webhook",
                        "payload": payload,
                        "status": "pending",
                        "attempts": 0,
                        "next_attempt_at": now - timedelta(seconds=1),
                        "claimed_until": None,
                        "last_error": None,
                        "created_at": now,
                        "sent_at": None,
                    }
                )
            async with engine.begin() as conn:
                await conn.execute(insert(table), rows)
            bar.update(task, completed=lo + len(rows))
    await analyze(engine, "outbox")
    claim_plan = await explain(engine, CLAIM_SQL, "outbox")

    notifier = WebhookNotifier(receiver.url, secret="bench-secret")
    dispatcher = dispatcher_for(sessions, notifier, args.outbox_batch, TimedDispatcher)
    assert isinstance(dispatcher, TimedDispatcher)
    dispatcher.claims = []
    dispatcher.sends = []
    stop = asyncio.Event()
    delivered = 0
    with progress() as bar:
        task = bar.add_task("outbox delivered", total=args.messages)

        async def dispatch() -> int:
            nonlocal delivered
            n = await dispatcher.dispatch_due()
            delivered += n
            bar.update(task, completed=delivered)
            if delivered >= args.messages:
                stop.set()
            return n

        start = time.perf_counter()
        try:
            await asyncio.wait_for(
                every(args.interval, stop, "outbox", dispatch), timeout=args.outbox_timeout
            )
        except TimeoutError:
            console.print(f"[red]outbox: gave up after {args.outbox_timeout}s")
        seconds = time.perf_counter() - start
    await notifier.close()

    records = await receiver.records()
    async with sessions() as session:
        sent = await session.scalar(
            select(func.count())
            .select_from(OutboxMessage)
            .where(OutboxMessage.status == "sent", OutboxMessage.stage.like("bench:%"))
        )
    claims = dispatcher.claims
    times = sorted(r[0] for r in records)
    return {
        "messages": args.messages,
        "distinct_cases": min(args.messages, args.cases),
        "batch": args.outbox_batch,
        "delivered": delivered,
        "sent_rows": sent,
        "received": len(records),
        "seconds": seconds,
        "per_s": delivered / seconds if seconds else None,
        "receiver_per_s": ((len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else None),
        "claims": len(claims),
        "claim_s": summary([dt for n, dt in claims if n]),
        # The rest of the per-message time is the row update's own transaction.
        "send_s": summary(dispatcher.sends),
        "claim_query": CLAIM_SQL,
        "claim_plan": claim_plan,
        # Claim time of every claim, in order: shows how it changes as the queue drains.
        "claim_series_s": [round(dt, 4) for _, dt in claims],
    }


# --------------------------------------------------------------------------- main


async def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    if args.db == "postgresql":
        url = args.pg_url
        await recreate_postgres(url)
    else:
        url = f"sqlite+aiosqlite:///{workdir / 'alerts-bench.db'}"
    await asyncio.to_thread(upgrade, url)
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    receiver = Receiver()
    try:
        version = await db_version(engine)
        console.print(f"database: {version} ({make_url(url).render_as_string()})")
        load = await load_cases(engine, args.cases, args.chunk, args.seed)
        console.print(
            f"loaded {load['rows']:,} rows in {load['seconds']:.1f}s "
            f"({load['rows_per_s']:,.0f} rows/s)"
        )
        explain = await explain_due(engine)
        timers = await bench_timers(engine, sessions, receiver, args)
        outbox = await bench_outbox(engine, sessions, receiver, args)
    finally:
        await receiver.close()
        await engine.dispose()
    return {
        "database": version,
        "analyzed": ANALYZE[engine.dialect.name],
        "load": load,
        "due_query": explain,
        "timers": timers,
        "outbox": outbox,
    }


def fmt(value: float | None, unit: str = "s") -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.1f} ms" if unit == "ms" else f"{value:.3f} s"


def print_table(result: dict[str, Any]) -> None:
    t, o, ld = result["timers"], result["outbox"], result["load"]
    p = result["parameters"]
    table = Table(title=f"thirdring alert benchmark — {result['database']}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("open cases / pending deadlines", f"{p['cases']:,} / {3 * p['cases']:,}")
    table.add_row(
        "bulk load (rows, s, rows/s)",
        f"{ld['rows']:,}, {ld['seconds']:.1f}, {ld['rows_per_s']:,.0f}",
    )
    table.add_row("planner statistics (ANALYZE after load)", str(result["analyzed"]))
    table.add_row(
        "due query uses ix_deadlines_status_due_at", str(result["due_query"]["uses_index"])
    )
    table.add_row(
        "scheduler tick, idle p50 / p99",
        f"{fmt(t['idle_tick_s']['p50'], 'ms')} / {fmt(t['idle_tick_s']['p99'], 'ms')}",
    )
    table.add_row(
        "scheduler tick, firing p50 / max",
        f"{fmt(t['busy_tick_s']['p50'], 'ms')} / {fmt(t['busy_tick_s']['max'], 'ms')}",
    )
    table.add_row(
        "sample deadlines fired / delivered", f"{t['fired']} / {t['delivered']} of {t['sample']}"
    )
    for label, key in (
        ("fired - due", "fire_lateness_s"),
        ("delivered - due", "due_to_delivered_s"),
    ):
        s = t[key]
        table.add_row(
            f"{label} p50 / p99 / max",
            f"{fmt(s['p50'], 'ms')} / {fmt(s['p99'], 'ms')} / {fmt(s['max'], 'ms')}",
        )
    table.add_row("outbox: notifications delivered", f"{o['delivered']:,} in {o['seconds']:.1f} s")
    table.add_row("outbox: notifications/s", f"{o['per_s']:.0f}" if o["per_s"] else "-")
    table.add_row(
        f"outbox: claim p50 / max (batch {o['batch']})",
        f"{fmt(o['claim_s']['p50'], 'ms')} / {fmt(o['claim_s']['max'], 'ms')}",
    )
    table.add_row("outbox: HTTP send p50", fmt(o["send_s"]["p50"], "ms"))
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--db", choices=("postgresql", "sqlite"), default="postgresql")
    parser.add_argument("--pg-url", default=PG_URL, help="dropped and recreated per run")
    parser.add_argument("--cases", type=int, default=100_000, help="open cases (3 deadlines each)")
    parser.add_argument("--sample", type=int, default=500, help="deadlines that fall due")
    parser.add_argument("--lead", type=float, default=10.0, help="s from loop start to 1st due")
    parser.add_argument("--window", type=float, default=20.0, help="s the sample is spread over")
    parser.add_argument("--grace", type=float, default=60.0, help="s to wait after the last due")
    parser.add_argument("--interval", type=float, default=0.25, help="loop interval (worker's)")
    parser.add_argument("--messages", type=int, default=5000, help="outbox rows to dispatch")
    parser.add_argument("--outbox-batch", type=int, default=50, help="dispatcher claim batch")
    parser.add_argument("--outbox-timeout", type=float, default=600.0)
    parser.add_argument("--chunk", type=int, default=2000, help="cases per insert transaction")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--analyze",
        choices=("auto", "yes", "no"),
        default="auto",
        help="ANALYZE after loading (auto: PostgreSQL yes, as autovacuum would; SQLite no)",
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results/alerts.json"))
    args = parser.parse_args()
    if not 0 < args.sample <= args.cases:
        parser.error("--sample must be between 1 and --cases")
    if args.analyze != "auto":
        ANALYZE[args.db] = args.analyze == "yes"
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    with tempfile.TemporaryDirectory() as tmp:
        result = asyncio.run(run(args, Path(tmp)))
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "machine": platform.machine(),
        },
        "parameters": {
            k: v for k, v in vars(args).items() if k not in ("out", "pg_url", "outbox_timeout")
        },
        **result,
    }
    print_table(result)
    # One entry per database, so a SQLite run does not erase the PostgreSQL numbers.
    existing: dict[str, Any] = {}
    if args.out.exists():
        try:
            existing = json.loads(args.out.read_text())
        except ValueError:
            existing = {}
    existing[args.db] = result
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(existing, indent=2, default=str) + "\n")
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
