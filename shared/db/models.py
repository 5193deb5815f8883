"""Tables. One metadata for all services; each service writes only its own tables.

ingest: ``ingested_events`` (dedupe). alert: everything else.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.db.types import UTCDateTime

# Explicit constraint names so Alembic migrations are stable on both databases.
NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# BIGINT on PostgreSQL, INTEGER (the rowid alias) on SQLite so autoincrement works there.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON()}  # noqa: RUF012


class IngestedEvent(Base):
    """Every event id ingest has published once; a repeat is dropped before Kafka."""

    __tablename__ = "ingested_events"

    event_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    source: Mapped[str] = mapped_column(String(64))
    first_seen_at: Mapped[datetime]


class Mention(Base):
    """A scored post as alert stored it (upsert by event id makes redelivery harmless)."""

    __tablename__ = "mentions"

    event_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    source: Mapped[str] = mapped_column(String(64))
    external_id: Mapped[str] = mapped_column(String(256))
    conversation_id: Mapped[str] = mapped_column(String(512), index=True)
    brand: Mapped[str] = mapped_column(String(128))
    author_id: Mapped[str] = mapped_column(String(256))
    is_brand: Mapped[bool] = mapped_column(Boolean)
    text: Mapped[str] = mapped_column(Text)
    url: Mapped[str | None] = mapped_column(String(2048))
    created_at: Mapped[datetime]
    ingested_at: Mapped[datetime]
    stored_at: Mapped[datetime]
    lang: Mapped[str] = mapped_column(String(16))
    sentiment: Mapped[str] = mapped_column(String(16))
    negative_score: Mapped[float] = mapped_column(Float)
    complaint_score: Mapped[float] = mapped_column(Float)
    urgency_score: Mapped[float] = mapped_column(Float)
    priority: Mapped[str] = mapped_column(String(2))
    reasons: Mapped[dict[str, Any]] = mapped_column(JSON)
    model_version: Mapped[str] = mapped_column(String(128))


class Case(Base):
    """One case per conversation; it is open while a customer post waits for the brand."""

    __tablename__ = "cases"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    conversation_id: Mapped[str] = mapped_column(String(512), unique=True)
    brand: Mapped[str] = mapped_column(String(128))
    source: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))  # open | answered
    priority: Mapped[str] = mapped_column(String(2))
    opened_at: Mapped[datetime]  # the first customer post's own time
    answered_at: Mapped[datetime | None]
    reply_url: Mapped[str | None] = mapped_column(String(2048))
    cycles: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    __table_args__ = (Index("ix_cases_status_priority", "status", "priority"),)


class ResponseCycle(Base):
    """One wait for the brand: from a customer post to the brand's next post.

    seq 1 is the first response; later cycles are next responses.
    """

    __tablename__ = "response_cycles"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime]
    started_event_id: Mapped[str] = mapped_column(String(36))
    priority: Mapped[str] = mapped_column(String(2))
    target_seconds: Mapped[float | None] = mapped_column(Float)
    due_at: Mapped[datetime | None]
    answered_at: Mapped[datetime | None]
    answered_event_id: Mapped[str | None] = mapped_column(String(36))
    response_seconds: Mapped[float | None] = mapped_column(Float)
    breached: Mapped[bool] = mapped_column(Boolean, default=False)

    __table_args__ = (
        UniqueConstraint("case_id", "seq"),
        Index("ix_response_cycles_started_at", "started_at"),
    )


class Deadline(Base):
    """A persisted timer: a warning or a breach for one response cycle."""

    __tablename__ = "deadlines"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"))
    cycle_id: Mapped[int] = mapped_column(ForeignKey("response_cycles.id", ondelete="CASCADE"))
    stage: Mapped[str] = mapped_column(String(16))  # warning | breach
    due_at: Mapped[datetime]
    # pending -> fired | cancelled (answered in time) | suppressed (backfill, already past)
    status: Mapped[str] = mapped_column(String(16))
    fired_at: Mapped[datetime | None]

    __table_args__ = (
        UniqueConstraint("cycle_id", "stage"),
        Index("ix_deadlines_status_due_at", "status", "due_at"),
    )


class OutboxMessage(Base):
    """A notification to deliver; the unique key makes each (cycle, stage, channel) once."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"))
    cycle_id: Mapped[int] = mapped_column(ForeignKey("response_cycles.id", ondelete="CASCADE"))
    stage: Mapped[str] = mapped_column(String(16))
    channel: Mapped[str] = mapped_column(String(32))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16))  # pending | sent | dead
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime]
    # A dispatcher that claimed the row owns it until then; a crash frees it by expiry.
    claimed_until: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]

    __table_args__ = (
        UniqueConstraint("cycle_id", "stage", "channel"),
        Index("ix_outbox_status_next_attempt_at", "status", "next_attempt_at"),
    )
