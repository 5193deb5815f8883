"""Case rules, timers and delivery on SQLite and PostgreSQL (real databases)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.alert.cases.service import CaseSettings, apply_scored
from services.alert.notify.outbox import OutboxDispatcher
from services.alert.notify.webhook import WebhookNotifier
from services.alert.sla.policies import SlaPolicy
from services.alert.sla.scheduler import fire_due
from services.alert.sla.store import sync_policies
from services.alert.stats.service import response_times
from shared.db.engine import make_sessionmaker
from shared.db.models import Case, Deadline, OutboxMessage, ResponseCycle
from shared.signing import verify
from tests.factories import raw, scored
from tests.http_receiver import HttpReceiver

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
POLICY = SlaPolicy(targets={"P1": 600, "P2": 3600, "P3": 7200, "P4": None}, warn_at_fraction=0.5)


async def _apply(engine: AsyncEngine, *events, now=T0):  # type: ignore[no-untyped-def]
    sessions = make_sessionmaker(engine)
    async with sessions() as s, s.begin():
        await sync_policies(s, [POLICY], now)
        return [(await apply_scored(s, e, CaseSettings(), now)).action for e in events]


async def test_case_opens_and_brand_reply_answers_it(engine: AsyncEngine) -> None:
    actions = await _apply(
        engine,
        scored(raw("1", T0)),
        scored(raw("2", T0 + timedelta(seconds=90), brand_post=True)),
    )
    assert actions == ["opened", "answered"]
    async with make_sessionmaker(engine)() as s:
        case = await s.scalar(select(Case))
        cycle = await s.scalar(select(ResponseCycle))
        statuses = sorted((await s.scalars(select(Deadline.status))).all())
    assert case.status == "answered" and case.reply_url == "https://example.invalid/2"
    assert cycle.response_seconds == 90 and not cycle.breached
    assert statuses == ["cancelled", "cancelled"]


async def test_redelivery_changes_nothing(engine: AsyncEngine) -> None:
    event = scored(raw("1", T0))
    assert await _apply(engine, event, event) == ["opened", "duplicate"]
    async with make_sessionmaker(engine)() as s:
        assert await s.scalar(select(func.count()).select_from(Deadline)) == 2


async def test_follow_up_after_answer_starts_next_cycle(engine: AsyncEngine) -> None:
    actions = await _apply(
        engine,
        scored(raw("1", T0)),
        scored(raw("2", T0 + timedelta(minutes=5), brand_post=True)),
        scored(raw("3", T0 + timedelta(minutes=7))),
    )
    assert actions == ["opened", "answered", "next_cycle"]
    async with make_sessionmaker(engine)() as s:
        case = await s.scalar(select(Case))
        seqs = (await s.scalars(select(ResponseCycle.seq).order_by(ResponseCycle.seq))).all()
    assert case.status == "open" and list(seqs) == [1, 2]


async def test_reply_seen_before_the_post_still_answers(engine: AsyncEngine) -> None:
    actions = await _apply(
        engine,
        scored(raw("2", T0 + timedelta(seconds=30), brand_post=True)),
        scored(raw("1", T0)),
    )
    assert actions == ["noted", "opened"]
    async with make_sessionmaker(engine)() as s:
        cycle = await s.scalar(select(ResponseCycle))
    assert cycle.response_seconds == 30


async def test_worse_follow_up_brings_deadline_closer(engine: AsyncEngine) -> None:
    actions = await _apply(
        engine,
        scored(raw("1", T0), level="P3"),
        scored(raw("2", T0 + timedelta(minutes=1)), level="P1"),
    )
    assert actions == ["opened", "raised"]
    async with make_sessionmaker(engine)() as s:
        cycle = await s.scalar(select(ResponseCycle))
        due = (await s.scalars(select(Deadline.due_at).order_by(Deadline.due_at))).all()
    assert cycle.priority == "P1" and cycle.due_at == T0 + timedelta(seconds=600)
    assert list(due) == [T0 + timedelta(seconds=300), T0 + timedelta(seconds=600)]


async def test_backfill_records_history_without_paging(engine: AsyncEngine) -> None:
    now = T0 + timedelta(days=1)
    await _apply(engine, scored(raw("1", T0, backfill=True)), now=now)
    sessions = make_sessionmaker(engine)
    assert await fire_due(sessions, ["log"], now=now) == 0
    async with sessions() as s:
        statuses = set((await s.scalars(select(Deadline.status))).all())
        stats = await response_times(s, T0 - timedelta(hours=1), now, now)
    assert statuses == {"suppressed"}
    assert stats.cases == 1 and stats.breaches == 1 and stats.within_target_ratio == 0.0


async def test_stages_fire_once_and_reach_the_webhook(
    engine: AsyncEngine, receiver: HttpReceiver
) -> None:
    await _apply(engine, scored(raw("1", T0)))
    sessions = make_sessionmaker(engine)
    # Nothing is due before the warning time; both stages are due after the breach time.
    assert await fire_due(sessions, ["webhook"], now=T0 + timedelta(seconds=299)) == 0
    assert await fire_due(sessions, ["webhook"], now=T0 + timedelta(seconds=300)) == 1
    assert await fire_due(sessions, ["webhook"], now=T0 + timedelta(seconds=601)) == 1
    assert await fire_due(sessions, ["webhook"], now=T0 + timedelta(seconds=900)) == 0

    receiver.fail_next = 1  # the target is down for the first try
    notifier = WebhookNotifier(receiver.url, "s3cret")
    dispatcher = OutboxDispatcher(
        sessions, {"webhook": notifier}, max_attempts=5, backoff_base=0.01, backoff_max=0.01
    )
    delivered = 0
    for i in range(5):  # each round a minute later: every retry is due
        delivered += await dispatcher.dispatch_due(now=T0 + timedelta(days=1, minutes=i))
    await notifier.close()
    assert delivered == 2
    stages = [r.json()["stage"] for r in receiver.requests]
    assert stages == ["warning", "breach"]  # in order, each once
    first = receiver.requests[0]
    assert verify(first.body, "s3cret", first.headers["x-thirdring-signature"])
    assert first.json()["post"]["reasons"] == ["intent:refund"]
    assert first.json()["post"]["contributions"] == [
        {"reason": "intent:refund", "weight": 0.1},
        {"reason": "other signals", "weight": 0.8},
    ]
    async with sessions() as s:
        rows = (await s.scalars(select(OutboxMessage).order_by(OutboxMessage.id))).all()
        cycle = await s.scalar(select(ResponseCycle))
    assert [r.status for r in rows] == ["sent", "sent"] and rows[0].attempts == 2
    assert cycle.breached


async def test_dead_after_retry_budget(engine: AsyncEngine, receiver: HttpReceiver) -> None:
    await _apply(engine, scored(raw("1", T0)))
    sessions = make_sessionmaker(engine)
    await fire_due(sessions, ["webhook"], now=T0 + timedelta(seconds=300))
    receiver.fail_next = 100
    notifier = WebhookNotifier(receiver.url, None)
    dispatcher = OutboxDispatcher(
        sessions, {"webhook": notifier}, max_attempts=3, backoff_base=0.01, backoff_max=0.01
    )
    for i in range(5):
        await dispatcher.dispatch_due(now=T0 + timedelta(days=1, minutes=i))
    await notifier.close()
    async with sessions() as s:
        row = await s.scalar(select(OutboxMessage))
    assert row.status == "dead" and row.attempts == 3 and "503" in (row.last_error or "")
