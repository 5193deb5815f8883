"""Stand-ins for the outside world of the alert service in end-to-end delivery tests: an SMTP
server that keeps what it accepts, an alerting file, scored mentions on the topic, and a
look into the outbox and deadline tables."""

from __future__ import annotations

import email
import json
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from email import policy as email_policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from sqlalchemy import select

from shared.db.engine import make_engine, make_sessionmaker
from shared.db.models import Deadline, OutboxMessage
from shared.events import utcnow
from shared.kafka import ensure_topics, make_producer
from shared.ports import free_port
from tests.factories import raw, scored
from tests.http_receiver import HttpReceiver


class Inbox:
    """aiosmtpd handler that keeps every accepted message (it runs in the server's thread)."""

    def __init__(self) -> None:
        self.envelopes: list[Envelope] = []
        self._lock = threading.Lock()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        with self._lock:
            self.envelopes.append(envelope)
        return "250 OK"

    def mails(self) -> list[tuple[list[str], EmailMessage]]:
        """(envelope recipients, parsed message) in arrival order."""
        with self._lock:
            envelopes = list(self.envelopes)
        out = []
        for env in envelopes:
            data = env.original_content or env.content
            assert isinstance(data, bytes)
            msg = email.message_from_bytes(data, policy=email_policy.default)
            out.append((list(env.rcpt_tos), msg))  # type: ignore[arg-type]
        return out


@contextmanager
def smtp_server() -> Iterator[tuple[int, Inbox]]:
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield controller.port, inbox
    finally:
        controller.stop()


@contextmanager
def receivers(n: int) -> Iterator[list[HttpReceiver]]:
    started = [HttpReceiver().start() for _ in range(n)]
    try:
        yield started
    finally:
        for r in started:
            r.stop()


def set_failures(receiver: HttpReceiver, n: int) -> None:
    """Answer the next ``n`` POSTs with 503, under the receiver's lock (its handler
    decrements the count in another thread)."""
    with receiver._lock:
        receiver.fail_next = n


def write_alerting(path: Path, **config: Any) -> Path:
    """The alerting file (JSON is YAML)."""
    path.write_text(json.dumps(config))
    return path


def policy(target: float, *, escalation: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A P1-only policy: a warning at half the target, then the breach."""
    return {
        "name": "fast",
        "targets": {"P1": target},
        "warn_at": [0.5],
        "escalation": escalation or [],
    }


async def publish(
    bootstrap: str, topic: str, dlq: str, partitions: int, conversations: list[str]
) -> datetime:
    """One scored P1 mention per conversation, all created now; returns that time."""
    await ensure_topics(bootstrap, [topic, dlq], partitions)
    producer = make_producer(bootstrap)
    await producer.start()
    at = utcnow()
    try:
        for conv in conversations:
            event = scored(raw(f"ext-{uuid.uuid4().hex[:8]}", at, conversation=conv))
            await producer.send_and_wait(topic, event.to_bytes(), key=event.key)
    finally:
        await producer.stop()
    return at


class Db:
    """Reads of the alert service's tables, on an engine of the test's own."""

    def __init__(self, url: str) -> None:
        self.engine = make_engine(url)
        self.sessions = make_sessionmaker(self.engine)

    async def outbox(self) -> list[OutboxMessage]:
        async with self.sessions() as session:
            return list(await session.scalars(select(OutboxMessage).order_by(OutboxMessage.id)))

    async def deadlines(self) -> list[Deadline]:
        async with self.sessions() as session:
            return list(await session.scalars(select(Deadline).order_by(Deadline.id)))

    async def close(self) -> None:
        await self.engine.dispose()
