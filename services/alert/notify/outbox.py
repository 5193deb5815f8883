"""Reliable delivery from the outbox table.

A message is sent until the target accepts it, with exponential backoff and jitter, up to a
retry budget (then it is marked dead and logged). Per case and channel, messages go out in
the order they were created: a later alert waits while an earlier one of the same case is
pending on that channel; a failing channel does not hold back the others.

Rows are claimed in a short transaction (a lease in ``claimed_until``; FOR UPDATE SKIP LOCKED
on PostgreSQL so replicas never claim the same row), sent outside any transaction, and the
outcome recorded afterwards. A dispatcher that dies mid-send loses its lease and another
one retries, so a target can see a message twice only across a crash: receivers dedupe on
the ``X-Thirdring-Delivery`` header.
"""

from __future__ import annotations

import logging
import random
from datetime import datetime, timedelta

from sqlalchemy import and_, exists, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import aliased

from services.alert.notify.base import DeliveryError, Notifier
from shared.db.locks import is_postgres
from shared.db.models import OutboxMessage
from shared.events import utcnow

log = logging.getLogger(__name__)

# How long a claimed row is left to its dispatcher; after a crash, until this has passed,
# nobody retries it. Longer than a send can take (notifiers time out after 10 s).
LEASE_SECONDS = 60.0


def backoff_seconds(attempts: int, base: float, cap: float) -> float:
    """Exponential backoff with jitter, so a recovering target is not hit by a stampede."""
    return random.uniform(0.5, 1.0) * min(cap, base * 2 ** max(0, attempts - 1))


class OutboxDispatcher:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        notifiers: dict[str, Notifier],
        *,
        max_attempts: int,
        backoff_base: float,
        backoff_max: float,
        batch: int = 50,
        lease_seconds: float = LEASE_SECONDS,
    ) -> None:
        self.sessions = sessions
        self.notifiers = notifiers
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.batch = batch
        self.lease = timedelta(seconds=lease_seconds)

    async def _claim(self, now: datetime) -> list[OutboxMessage]:
        earlier = aliased(OutboxMessage)
        blocked = exists().where(
            and_(
                earlier.case_id == OutboxMessage.case_id,
                earlier.channel == OutboxMessage.channel,
                earlier.status == "pending",
                earlier.id < OutboxMessage.id,
            )
        )
        stmt = (
            select(OutboxMessage)
            .where(
                OutboxMessage.status == "pending",
                OutboxMessage.next_attempt_at <= now,
                or_(OutboxMessage.claimed_until.is_(None), OutboxMessage.claimed_until < now),
                ~blocked,
            )
            .order_by(OutboxMessage.id)
            .limit(self.batch)
        )
        async with self.sessions() as session, session.begin():
            if is_postgres(session):
                stmt = stmt.with_for_update(skip_locked=True, of=OutboxMessage)
            rows = list((await session.scalars(stmt)).all())
            for row in rows:
                row.claimed_until = now + self.lease
        return rows

    async def dispatch_due(self, now: datetime | None = None) -> int:
        """Try every due message once; returns how many were delivered."""
        now = now or utcnow()
        delivered = 0
        for msg in await self._claim(now):
            error = await self._send(msg)
            async with self.sessions() as session, session.begin():
                row = await session.get(OutboxMessage, msg.id)
                assert row is not None
                self._record(row, error, now)
                delivered += error is None
        return delivered

    async def _send(self, msg: OutboxMessage) -> str | None:
        notifier = self.notifiers.get(msg.channel)
        if notifier is None:
            return f"channel {msg.channel!r} is not configured"
        try:
            await notifier.send(str(msg.id), msg.payload)
        except DeliveryError as exc:
            return str(exc)
        return None

    def _record(self, row: OutboxMessage, error: str | None, now: datetime) -> None:
        row.attempts += 1
        row.claimed_until = None
        ids = {"case_id": row.case_id, "stage": row.stage}
        if error is None:
            row.status = "sent"
            row.sent_at = utcnow()
            row.last_error = None
            log.info(
                "outbox %s (%s) %s sent for case %s",
                row.id,
                row.channel,
                row.stage,
                row.case_id,
                extra=ids,
            )
            return
        row.last_error = error[:2000]
        if row.attempts >= self.max_attempts:
            row.status = "dead"
            log.error(
                "outbox %s (%s) dead after %d attempts: %s",
                row.id,
                row.channel,
                row.attempts,
                error,
                extra=ids,
            )
            return
        delay = backoff_seconds(row.attempts, self.backoff_base, self.backoff_max)
        row.next_attempt_at = now + timedelta(seconds=delay)
        log.warning(
            "outbox %s (%s) attempt %d failed, retry in %.1fs: %s",
            row.id,
            row.channel,
            row.attempts,
            delay,
            error,
            extra=ids,
        )
