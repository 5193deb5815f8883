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
    Connection,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    event,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.db.types import UTCDateTime

# Roles of API tokens, weakest first: each role can do what the ones before it can.
ROLES = ("viewer", "agent", "admin")

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
    author_vip: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    author_followers: Mapped[int | None] = mapped_column(Integer)

    # ``reasons`` holds {"reasons": [str], "contributions": [{"reason", "weight"}]}: what
    # raised the urgency and by how much. Posts stored before contributions were kept have
    # none; these read either layout.
    @staticmethod
    def stored_reasons(reasons: list[str], contributions: list[dict[str, Any]]) -> dict[str, Any]:
        return {"reasons": reasons, "contributions": contributions}

    @property
    def reason_list(self) -> list[str]:
        return (self.reasons or {}).get("reasons", [])

    @property
    def contribution_list(self) -> list[dict[str, Any]]:
        return (self.reasons or {}).get("contributions", [])


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
    # What routing and policy choice looked at (copied from the opening post).
    language: Mapped[str | None] = mapped_column(String(16))
    vip: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    intents: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # The policy version the case started with; later edits apply to new cases only.
    policy_id: Mapped[int | None] = mapped_column(ForeignKey("sla_policies.id"))
    team_id: Mapped[int | None] = mapped_column(ForeignKey("teams.id"))
    assignee_id: Mapped[int | None] = mapped_column(ForeignKey("team_members.id"))
    incident_id: Mapped[int | None] = mapped_column(ForeignKey("incidents.id"))
    assigned_at: Mapped[datetime | None]
    claimed_at: Mapped[datetime | None]
    acknowledged_at: Mapped[datetime | None]
    # Clock pauses: snoozed until a time, or waiting for the customer to write back.
    snoozed_until: Mapped[datetime | None]
    waiting_on_customer: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    # The escalation chain, frozen when the case starts escalating (grafana/oncall style).
    escalation: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    __table_args__ = (
        Index("ix_cases_status_priority", "status", "priority"),
        Index("ix_cases_assignee_id_status", "assignee_id", "status"),
        # Open cases only: the backlog's join and /metrics' open-case gauge (index-only on
        # PostgreSQL, whatever the number of answered cases).
        Index(
            "ix_cases_open",
            "id",
            postgresql_where=text("status = 'open'"),
            sqlite_where=text("status = 'open'"),
            postgresql_include=[
                "source",
                "priority",
                "brand",
                "language",
                "team_id",
                "assignee_id",
                "waiting_on_customer",
                "snoozed_until",
            ],
        ),
    )


UNFIRED = (
    "answered_at IS NULL AND breached IS false AND paused_at IS NULL AND target_seconds IS NOT NULL"
)


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
    kind: Mapped[str] = mapped_column(String(8), default="first", server_default="first")
    priority: Mapped[str] = mapped_column(String(2))
    target_seconds: Mapped[float | None] = mapped_column(Float)
    # True: the target counts business time of the policy's calendar; False: wall clock.
    business_time: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    # Counted time spent paused (snooze, waiting on customer); deadlines move by it.
    paused_seconds: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    paused_at: Mapped[datetime | None]
    due_at: Mapped[datetime | None]
    answered_at: Mapped[datetime | None]
    answered_event_id: Mapped[str | None] = mapped_column(String(36))
    response_seconds: Mapped[float | None] = mapped_column(Float)
    # The response time on the business clock, set with ``answered_at``: the time counted
    # in the calendar of the case's policy version (wall time when ``business_time`` is
    # False or there is no policy) less ``paused_seconds``, at least 0. Stored so the stats
    # read it like the wall clock, in SQL, instead of walking calendars per cycle.
    business_response_seconds: Mapped[float | None] = mapped_column(Float)
    breached: Mapped[bool] = mapped_column(Boolean, default=False)
    # What the stats group and filter by, copied when the cycle is inserted (see
    # ``_copy_stats_facts``) so they read this table alone: the case's source, brand and
    # language (never changed after the case opens) and its team and assignee (copied again
    # to every cycle of the case when they change, see ``_follow_case_owner``), and the
    # opening post's sentiment, complaint score and ingest lag (ingested_at - created_at).
    source: Mapped[str | None] = mapped_column(String(64))
    brand: Mapped[str | None] = mapped_column(String(128))
    language: Mapped[str | None] = mapped_column(String(16))
    team_id: Mapped[int | None] = mapped_column(BigId)
    assignee_id: Mapped[int | None] = mapped_column(BigId)
    sentiment: Mapped[str | None] = mapped_column(String(16))
    complaint_score: Mapped[float | None] = mapped_column(Float)
    ingest_lag_seconds: Mapped[float | None] = mapped_column(Float)

    __table_args__ = (
        UniqueConstraint("case_id", "seq"),
        # A case has one first response (so stats count first cycles as cases).
        Index(
            "uq_response_cycles_first",
            "case_id",
            unique=True,
            postgresql_where=text("kind = 'first'"),
            sqlite_where=text("kind = 'first'"),
        ),
        Index("ix_response_cycles_started_at", "started_at"),
        # Stats read first (or next) responses by start time.
        Index("ix_response_cycles_kind_started_at", "kind", "started_at"),
        # Waiting past the deadline with the breach not fired yet (normally none: the
        # scheduler fires it), which /metrics counts at scrape time.
        Index(
            "ix_response_cycles_unfired",
            "due_at",
            postgresql_where=text(UNFIRED),
            sqlite_where=text(UNFIRED),
            postgresql_include=["source", "priority"],
        ),
        # Waiting cycles only, longest wait first: the backlog (its list, with ORDER BY
        # started_at, id LIMIT, and its counts).
        Index(
            "ix_response_cycles_waiting",
            "started_at",
            "id",
            postgresql_where=text("answered_at IS NULL"),
            sqlite_where=text("answered_at IS NULL"),
            postgresql_include=[
                "case_id",
                "seq",
                "kind",
                "priority",
                "due_at",
                "paused_at",
                "breached",
            ],
        ),
    )


@event.listens_for(ResponseCycle, "before_insert")
def _copy_stats_facts(_mapper: Any, connection: Connection, cycle: ResponseCycle) -> None:
    """Fill a new cycle's stats columns from its case and opening post, whoever inserts it
    (unless given: bulk loads write them themselves)."""
    if cycle.source is not None:
        return
    case = connection.execute(
        select(Case.source, Case.brand, Case.language, Case.team_id, Case.assignee_id).where(
            Case.id == cycle.case_id
        )
    ).one_or_none()
    if case is not None:
        cycle.source, cycle.brand, cycle.language, cycle.team_id, cycle.assignee_id = case
    post = connection.execute(
        select(
            Mention.sentiment, Mention.complaint_score, Mention.created_at, Mention.ingested_at
        ).where(Mention.event_id == cycle.started_event_id)
    ).one_or_none()
    if post is not None:
        cycle.sentiment, cycle.complaint_score = post.sentiment, post.complaint_score
        cycle.ingest_lag_seconds = (post.ingested_at - post.created_at).total_seconds()


@event.listens_for(Case, "after_update")
def _follow_case_owner(_mapper: Any, connection: Connection, case: Case) -> None:
    """A case given to another team or member: its cycles' copies follow (the stats group
    every cycle by the case's current team and assignee)."""
    state = inspect(case)
    if not (
        state.attrs.team_id.history.has_changes() or state.attrs.assignee_id.history.has_changes()
    ):
        return
    connection.execute(
        update(ResponseCycle)
        .where(ResponseCycle.case_id == case.id)
        .values(team_id=case.team_id, assignee_id=case.assignee_id)
    )


class StatsCounter(Base):
    """Events counted as they happen, for ``/metrics`` (services/alert/stats/counters.py).

    ``le`` is the histogram bucket (upper bound, ``+Inf``; not cumulative), or '' for a
    plain counter; ``priority`` is '' where the metric has none.
    """

    __tablename__ = "stats_counters"

    metric: Mapped[str] = mapped_column(String(32), primary_key=True)
    source: Mapped[str] = mapped_column(String(64), primary_key=True)
    priority: Mapped[str] = mapped_column(String(2), primary_key=True)
    le: Mapped[str] = mapped_column(String(16), primary_key=True)
    events: Mapped[int] = mapped_column(BigInteger)
    total: Mapped[float] = mapped_column(Float)


class Deadline(Base):
    """A persisted timer of a case's current cycle.

    stage: ``warning:<fraction>`` and ``breach`` (SLA), ``escalation:<step>`` (after a breach),
    ``reassign`` (assignee did not act), ``snooze_end`` (resume the clock).
    """

    __tablename__ = "deadlines"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"))
    cycle_id: Mapped[int] = mapped_column(ForeignKey("response_cycles.id", ondelete="CASCADE"))
    stage: Mapped[str] = mapped_column(String(32))
    # The fraction of the target this stage fires at (SLA stages), for recomputing on
    # pause/resume and priority rises.
    fraction: Mapped[float | None] = mapped_column(Float)
    due_at: Mapped[datetime]
    # pending -> fired | cancelled (answered, acknowledged) | suppressed (backfill, past)
    #         | paused (clock paused; due_at is recomputed on resume)
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
    stage: Mapped[str] = mapped_column(String(32))
    channel: Mapped[str] = mapped_column(String(64))
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
        # The dispatcher's "an earlier message of this case and channel is pending" check.
        Index("ix_outbox_case_id_channel_status_id", "case_id", "channel", "status", "id"),
    )


class SlaPolicyVersion(Base):
    """One version of an SLA policy. Editing a policy adds a version; cases keep theirs."""

    __tablename__ = "sla_policies"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128))
    version: Mapped[int] = mapped_column(Integer)
    active: Mapped[bool] = mapped_column(Boolean)
    # Order of evaluation: the first active policy whose conditions match is chosen.
    position: Mapped[int] = mapped_column(Integer)
    # The whole policy (conditions, targets, calendar, stages, escalation) as validated JSON.
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime]

    __table_args__ = (UniqueConstraint("name", "version"),)


class Team(Base):
    __tablename__ = "teams"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    # Working hours (a calendar spec) or None for always on duty.
    calendar: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # Open cases one member may hold at once; None = no cap.
    capacity: Mapped[int | None] = mapped_column(Integer)
    # Reassign when the assignee has neither claimed nor acknowledged within this time.
    reassign_after_seconds: Mapped[float | None] = mapped_column(Float)
    # Names of notification channels for this team's alerts.
    channels: Mapped[dict[str, Any]] = mapped_column(JSON)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    updated_at: Mapped[datetime]


class TeamMember(Base):
    __tablename__ = "team_members"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"))
    handle: Mapped[str] = mapped_column(String(128))
    name: Mapped[str] = mapped_column(String(256))
    email: Mapped[str | None] = mapped_column(String(320))
    role: Mapped[str] = mapped_column(String(16))  # agent | lead | manager
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    # Round-robin: the member assigned longest ago (or never) goes next.
    last_assigned_at: Mapped[datetime | None]

    __table_args__ = (UniqueConstraint("team_id", "handle"),)


class RoutingRule(Base):
    __tablename__ = "routing_rules"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    position: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(128))
    # brand / source / language / intent / priority: each a list of accepted values.
    conditions: Mapped[dict[str, Any]] = mapped_column(JSON)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"))


class Incident(Base):
    """A burst of similar complaints (an outage): one incident, its cases linked."""

    __tablename__ = "incidents"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    brand: Mapped[str] = mapped_column(String(128))
    signature: Mapped[str] = mapped_column(String(128))  # e.g. intent:outage
    status: Mapped[str] = mapped_column(String(16))  # open | closed
    opened_at: Mapped[datetime]
    last_seen_at: Mapped[datetime]
    case_count: Mapped[int] = mapped_column(Integer)

    __table_args__ = (Index("ix_incidents_brand_signature_status", "brand", "signature", "status"),)


class CaseEvent(Base):
    """The case's timeline: every change, who made it and when."""

    __tablename__ = "case_events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime]
    actor: Mapped[str] = mapped_column(String(128))  # "system" or the token's name
    kind: Mapped[str] = mapped_column(String(32))
    data: Mapped[dict[str, Any]] = mapped_column(JSON)


class ApiToken(Base):
    """An API token: only its SHA-256 is stored; the token itself is shown once."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    role: Mapped[str] = mapped_column(String(16))  # viewer | agent | admin
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))  # first characters, to recognise it
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]


class SourceCursor(Base):
    """Where each polled source stopped (per feed), and how its last polls went.

    The cursor is saved only after the page it follows was published, so a restart repeats
    at most that page (and the publisher's event-id dedupe drops the repeats).
    """

    __tablename__ = "source_cursors"

    source: Mapped[str] = mapped_column(String(64), primary_key=True)
    cursor: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_at: Mapped[datetime]
    last_ok_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
