"""Alerts delivered end to end: a scored mention on the topic, deadlines firing on real time,
the outbox delivering to loopback Slack, Teams, webhook and SMTP servers, through a target
that is down, a kill -9 and two replicas on one PostgreSQL database."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from services.alert.worker import run_alert
from shared.broker import EmbeddedBroker
from shared.config import Settings
from shared.db.migrate import upgrade_async
from shared.ports import free_port
from shared.signing import SIGNATURE_HEADER, verify
from tests.alert.notify.test_slack import check_slack_message
from tests.alert.notify.test_teams import check_teams_message
from tests.alert.stand_ins import (
    Db,
    policy,
    publish,
    receivers,
    set_failures,
    smtp_server,
    write_alerting,
)
from tests.http_receiver import HttpReceiver, Received

pytestmark = pytest.mark.slow

SECRET = "delivery-test-secret"
DELIVERY = "x-thirdring-delivery"
FAST = {"scheduler_interval": 0.1, "outbox_interval": 0.1}


async def until(
    predicate: Callable[[], Any], tasks: list[asyncio.Task[None]], timeout: float = 40.0
) -> None:
    """Poll ``predicate`` (sync or async); a service task that dies fails the test at once."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        for task in tasks:
            if task.done():
                task.result()  # raises its error
                raise AssertionError(f"{task.get_name()} stopped early")
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.1)


async def stop_all(stop: asyncio.Event, tasks: list[asyncio.Task[None]]) -> None:
    stop.set()
    for task in tasks:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, timeout=15)


def deliveries(receiver: HttpReceiver) -> list[int]:
    return [int(r.headers[DELIVERY]) for r in receiver.requests]


async def publish_for(s: Settings, conversations: list[str]) -> None:
    await publish(
        s.kafka_bootstrap_servers, s.topic_scored, s.topic_dlq, s.partitions, conversations
    )


# -- 1. every channel, in real time -------------------------------------------------------


def check_webhook(req: Received, stage: str) -> dict[str, Any]:
    assert verify(req.body, SECRET, req.headers[SIGNATURE_HEADER.lower()]), "bad signature"
    assert req.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = req.json()
    assert body["schema"] == "thirdring.alert/v1"
    assert body["stage"] == stage
    assert body["stage_id"] == ("warning:0.5" if stage == "warning" else stage)
    assert body["fraction"] == (0.5 if stage == "warning" else None)
    case, post = body["case"], body["post"]
    assert case["priority"] == "P1" and case["brand"] == "acme" and case["team"] == "care"
    assert case["conversation_id"] == "all-channels" and case["target_seconds"] == 4
    assert post["text"] == "my order never arrived" and post["reasons"] == ["intent:refund"]
    assert body["links"]["case"].endswith(f"/api/v1/cases/{case['id']}")
    return body


async def test_warning_breach_and_escalation_reach_every_channel(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with receivers(3) as (slack, teams, hook), smtp_server() as (smtp_port, inbox):
        monkeypatch.setenv("TEST_SLACK_URL", slack.url)
        monkeypatch.setenv("TEST_TEAMS_URL", teams.url)
        alerting = write_alerting(
            tmp_path / "alerting.yaml",
            policies=[
                policy(
                    4,
                    escalation=[{"after_seconds": 1, "notify": "team_lead", "channels": ["email"]}],
                )
            ],
            teams=[
                {
                    "name": "care",
                    "channels": ["slack", "teams", "webhook", "email"],
                    "members": [
                        {"handle": "ann", "email": "ann@acme.example", "role": "agent"},
                        {"handle": "lee", "email": "lead@acme.example", "role": "lead"},
                    ],
                }
            ],
            routing=[{"name": "p1", "when": {"priority": ["P1"]}, "team": "care"}],
            channels={
                "slack": {"type": "slack", "url_env": "TEST_SLACK_URL"},
                "teams": {"type": "teams", "url_env": "TEST_TEAMS_URL"},
                "email": {
                    "type": "email",
                    "port": smtp_port,
                    "sender": "alerts@thirdring.example",
                    "recipients": ["care@acme.example"],
                },
            },
        )
        s = settings.model_copy(
            update={
                "alerting_file": alerting,
                "notify_webhook_url": hook.url,
                "notify_webhook_secret": SecretStr(SECRET),
                **FAST,
            }
        )
        await publish_for(s, ["all-channels"])
        stop = asyncio.Event()
        tasks = [asyncio.create_task(run_alert(s, stop, serve_api=False), name="alert")]
        try:
            await until(
                lambda: (
                    all(len(r.requests) >= 2 for r in (slack, teams, hook))
                    and len(inbox.envelopes) >= 3
                ),
                tasks,
            )
            await asyncio.sleep(1.0)  # time for a duplicate to show up, were there one
        finally:
            await stop_all(stop, tasks)

        db = Db(s.resolved_database_url)
        try:
            outbox = {m.id: m for m in await db.outbox()}
        finally:
            await db.close()
        assert {(m.stage, m.channel) for m in outbox.values()} == {
            *((st, ch) for st in ("warning:0.5", "breach") for ch in ("slack", "teams", "webhook")),
            ("warning:0.5", "email"),
            ("breach", "email"),
            ("escalation:1", "email"),
        }
        assert all(m.status == "sent" for m in outbox.values())

        # Each HTTP target: exactly the warning, then the breach, as its own outbox rows.
        for name, r in (("slack", slack), ("teams", teams), ("webhook", hook)):
            ids = deliveries(r)
            assert [(outbox[i].stage, outbox[i].channel) for i in ids] == [
                ("warning:0.5", name),
                ("breach", name),
            ], name
        for req, label in zip(slack.requests, ("Warning at 50% of target", "Breach"), strict=True):
            msg = req.json()
            check_slack_message(msg)
            header = next(b for b in msg["blocks"] if b["type"] == "header")
            assert label in header["text"]["text"] and "P1 case for acme" in header["text"]["text"]
        for req, color in zip(teams.requests, ("Warning", "Attention"), strict=True):
            card = check_teams_message(req.json())
            assert card["body"][0]["color"] == color
            assert card["body"][1]["inlines"][0]["text"] == "my order never arrived"
        warning, breach = (
            check_webhook(r, st) for r, st in zip(hook.requests, ("warning", "breach"), strict=True)
        )
        assert warning["case"]["id"] == breach["case"]["id"]
        left = warning["case"]["time_left_seconds"], breach["case"]["time_left_seconds"]
        assert left[0] > left[1] and left[1] <= 0

        # E-mail: the warning and the breach to the team's address, then the escalation,
        # which also goes to the lead the step names (and to nobody else of the team).
        mails = inbox.mails()
        assert [m["Subject"].split()[1] for _, m in mails] == ["WARNING", "BREACH", "ESCALATION"]
        assert [outbox[int(m["X-Thirdring-Delivery"])].stage for _, m in mails] == [
            "warning:0.5",
            "breach",
            "escalation:1",
        ]
        assert mails[0][0] == mails[1][0] == ["care@acme.example"]
        assert mails[2][0] == ["care@acme.example", "lead@acme.example"]
        assert "lead@acme.example" in mails[2][1]["To"]
        body = mails[2][1].get_body(("plain",))
        assert body is not None and "Escalated to: team lead (step 1)" in body.get_content()


# -- 2. a target that is down for a while -------------------------------------------------


async def test_target_down_for_a_while_gets_everything_once_and_in_order(
    settings: Settings, receiver: HttpReceiver, tmp_path: Path
) -> None:
    alerting = write_alerting(
        tmp_path / "alerting.yaml", policies=[policy(3)], default_channels=["webhook"]
    )
    s = settings.model_copy(
        update={
            "alerting_file": alerting,
            "notify_webhook_url": receiver.url,
            "notify_webhook_secret": SecretStr(SECRET),
            "notify_backoff_base": 0.2,
            "notify_backoff_max": 0.5,
            "notify_max_attempts": 100,
            **FAST,
        }
    )
    set_failures(receiver, 10**6)
    await publish_for(s, ["down-target"])
    db = Db(s.resolved_database_url)
    stop = asyncio.Event()
    tasks = [asyncio.create_task(run_alert(s, stop, serve_api=False), name="alert")]
    try:
        # Down until the breach is queued behind a warning that keeps failing...
        async def breach_queued_behind_warning() -> bool:
            rows = {m.stage: m for m in await db.outbox()}
            warning = rows.get("warning:0.5")
            return "breach" in rows and warning is not None and warning.attempts >= 2

        await until(breach_queued_behind_warning, tasks)
        assert receiver.requests == []
        # ...then three more failures, and up.
        set_failures(receiver, 3)
        await until(lambda: len(receiver.requests) >= 2, tasks)
        await asyncio.sleep(1.0)  # time for a duplicate to show up, were there one
    finally:
        await stop_all(stop, tasks)
    try:
        outbox = {m.id: m for m in await db.outbox()}
    finally:
        await db.close()

    assert receiver.fail_next == 0
    assert [r.json()["stage"] for r in receiver.requests] == ["warning", "breach"]
    for r in receiver.requests:
        assert verify(r.body, SECRET, r.headers[SIGNATURE_HEADER.lower()])
    ids = deliveries(receiver)
    assert [outbox[i].stage for i in ids] == ["warning:0.5", "breach"]
    assert sorted(ids) == sorted(outbox)
    assert all(m.status == "sent" and m.sent_at is not None for m in outbox.values())
    warning, breach = outbox[ids[0]], outbox[ids[1]]
    # The warning took every failure (2+ while the breach waited, then 3); the breach was
    # never tried before the warning was through, so its first attempt succeeded.
    assert warning.attempts >= 2 + 3 + 1 and warning.last_error is None
    assert breach.attempts == 1
    assert warning.sent_at is not None and breach.sent_at is not None
    assert warning.sent_at <= breach.sent_at


# -- 3. kill -9 between the deadline and the delivery --------------------------------------


def thirdring_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("thirdring")
    if exe.exists():
        return [str(exe)]
    return [sys.executable, "-c", "from services.cli import main; main()"]


@contextlib.contextmanager
def alert_process(env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``thirdring run alert --no-api`` as its own process; always gone when the block ends."""
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [*thirdring_cmd(), "run", "alert", "--no-api"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            # SIGTERM, but not waited out: a consumer still joining its group (after the
            # kill -9 the dead member holds it for the session timeout) delays the exit.
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def log_tail(log: Path, lines: int = 40) -> str:
    text = log.read_text(errors="replace") if log.exists() else ""
    return "\n".join(text.splitlines()[-lines:])


async def test_kill_9_between_deadline_and_delivery_loses_nothing_and_sends_nothing_twice(
    broker: EmbeddedBroker, topics: dict[str, str], receiver: HttpReceiver, tmp_path: Path
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'alert.db'}"
    await upgrade_async(url)
    alerting = write_alerting(
        tmp_path / "alerting.yaml",
        policies=[policy(6, escalation=[{"after_seconds": 1, "notify": "team"}])],
        default_channels=["webhook"],
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("THIRDRING_")}
    env.update(
        KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap_servers,
        THIRDRING_DATABASE_URL=url,
        THIRDRING_DATA_DIR=str(tmp_path / "var"),
        THIRDRING_ALERTING_FILE=str(alerting),
        THIRDRING_TOPIC_SCORED=topics["topic_scored"],
        THIRDRING_TOPIC_DLQ=topics["topic_dlq"],
        THIRDRING_PARTITIONS="3",
        THIRDRING_CONSUMER_GROUP_PREFIX=f"kill-{tmp_path.name[-8:]}",
        THIRDRING_API_PORT=str(free_port()),  # --no-api still answers health probes here
        THIRDRING_NOTIFY_WEBHOOK_URL=receiver.url,
        THIRDRING_NOTIFY_WEBHOOK_SECRET=SECRET,
        THIRDRING_SCHEDULER_INTERVAL="0.1",
        THIRDRING_OUTBOX_INTERVAL="0.1",
        THIRDRING_NOTIFY_BACKOFF_BASE="0.2",
        THIRDRING_NOTIFY_BACKOFF_MAX="1",
        THIRDRING_NOTIFY_MAX_ATTEMPTS="1000",
    )
    log = tmp_path / "alert.log"
    conversations = ["kill-a", "kill-b"]
    set_failures(receiver, 10**6)
    db = Db(url)
    try:
        with alert_process(env, log) as first:
            # Publish once it consumes, so the deadlines count from a running service and
            # the breach is still ahead when it is killed, however slow the start was.
            def consuming() -> bool:
                assert first.poll() is None, f"first process exited:\n{log_tail(log)}"
                return "alert consuming" in log.read_text(errors="replace")

            await until(consuming, [])
            await publish(
                broker.bootstrap_servers,
                topics["topic_scored"],
                topics["topic_dlq"],
                3,
                conversations,
            )

            async def warnings_fired_and_failing() -> bool:
                assert first.poll() is None, f"first process exited:\n{log_tail(log)}"
                rows = await db.outbox()
                return (
                    len(rows) >= len(conversations)
                    and all(m.status == "pending" for m in rows)
                    and all(m.attempts >= 1 for m in rows if m.stage == "warning:0.5")
                    # Not in the middle of a send: a claimed row would wait out its lease.
                    and all(m.claimed_until is None for m in rows)
                )

            await until(warnings_fired_and_failing, [])
            os.kill(first.pid, signal.SIGKILL)
            first.wait(timeout=10)
        assert receiver.requests == []
        left = await db.outbox()
        assert left and all(m.status == "pending" for m in left)
        assert any(d.status == "pending" for d in await db.deadlines())

        set_failures(receiver, 0)
        with alert_process(env, log) as second:
            expected = len(conversations) * 3  # warning, breach, escalation:1

            def all_arrived() -> bool:
                assert second.poll() is None, f"second process exited:\n{log_tail(log)}"
                return len(receiver.requests) >= expected

            await until(all_arrived, [])
            await asyncio.sleep(1.5)  # time for a duplicate to show up, were there one
        outbox = {m.id: m for m in await db.outbox()}
        deadlines = await db.deadlines()
    finally:
        await db.close()

    ids = deliveries(receiver)
    assert len(ids) == len(set(ids)) == len(outbox) == expected, log_tail(log)
    assert set(ids) == set(outbox)
    seen = Counter(
        (r.json()["case"]["conversation_id"], r.json()["stage_id"]) for r in receiver.requests
    )
    assert seen == Counter(
        {(c, st): 1 for c in conversations for st in ("warning:0.5", "breach", "escalation:1")}
    )
    for r in receiver.requests:
        assert verify(r.body, SECRET, r.headers[SIGNATURE_HEADER.lower()])
    by_case: dict[str, list[str]] = {}
    for r in receiver.requests:
        by_case.setdefault(r.json()["case"]["conversation_id"], []).append(r.json()["stage"])
    assert all(v == ["warning", "breach", "escalation"] for v in by_case.values()), by_case
    assert all(m.status == "sent" for m in outbox.values())
    assert deadlines and all(d.status in ("fired", "cancelled") for d in deadlines)


# -- 4. two replicas on one PostgreSQL database --------------------------------------------


async def test_two_replicas_never_both_deliver_a_stage(
    settings: Settings, receiver: HttpReceiver, tmp_path: Path
) -> None:
    if not settings.resolved_database_url.startswith("postgresql"):
        pytest.skip("replicas share a PostgreSQL database (THIRDRING_TEST_POSTGRES_URL)")
    alerting = write_alerting(
        tmp_path / "alerting.yaml", policies=[policy(3)], default_channels=["webhook"]
    )
    s = settings.model_copy(
        update={
            "alerting_file": alerting,
            "notify_webhook_url": receiver.url,
            "notify_webhook_secret": SecretStr(SECRET),
            "scheduler_interval": 0.05,
            "outbox_interval": 0.05,
        }
    )
    conversations = [f"replica-{n:02d}" for n in range(20)]
    expected = len(conversations) * 2  # warning, breach
    await publish_for(s, conversations)
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(run_alert(s, stop, serve_api=False), name=f"alert-{n}") for n in (1, 2)
    ]
    try:
        await until(lambda: len(receiver.requests) >= expected, tasks, timeout=45)
        await asyncio.sleep(1.5)  # time for a duplicate to show up, were there one
    finally:
        await stop_all(stop, tasks)
    db = Db(s.resolved_database_url)
    try:
        outbox = {m.id: m for m in await db.outbox()}
        deadlines = await db.deadlines()
    finally:
        await db.close()

    ids = deliveries(receiver)
    assert len(ids) == len(set(ids)) == len(outbox) == expected
    assert set(ids) == set(outbox)
    seen = Counter(
        (r.json()["case"]["conversation_id"], r.json()["stage_id"]) for r in receiver.requests
    )
    assert seen == Counter({(c, st): 1 for c in conversations for st in ("warning:0.5", "breach")})
    rows = Counter((m.case_id, m.stage) for m in outbox.values())
    assert len(rows) == expected and set(rows.values()) == {1}
    assert all(m.status == "sent" for m in outbox.values())
    assert len(deadlines) == expected and all(d.status == "fired" for d in deadlines)
