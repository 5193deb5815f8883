"""Event contracts: the only shapes that travel between services.

Every event carries ``schema`` (name and major version) so a consumer can refuse a shape it
does not know instead of misreading it. Events are keyed on Kafka by ``conversation_id`` so a
complaint and the brand's reply land on the same partition, in order.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

# Fixed namespace: event ids must be the same on every machine and in every release.
EVENT_NAMESPACE = uuid.UUID("5d3c5a52-8f39-4c1b-9a57-3d1f1c0e7a11")

RAW_SCHEMA = "thirdring.mention.raw/v1"
SCORED_SCHEMA = "thirdring.mention.scored/v1"
DEAD_LETTER_SCHEMA = "thirdring.deadletter/v1"


def event_id_for(source: str, external_id: str) -> str:
    """Stable id of a post: the same (source, external id) always gives the same id."""
    return str(uuid.uuid5(EVENT_NAMESPACE, f"{source}:{external_id}"))


def _aware_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("timestamp must carry a time zone (e.g. 2026-11-27T10:00:00Z)")
    return value.astimezone(UTC)


AwareDatetime = Annotated[datetime, AfterValidator(_aware_utc)]


def utcnow() -> datetime:
    return datetime.now(UTC)


class Author(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str = Field(min_length=1, max_length=256)
    handle: str | None = Field(default=None, max_length=256)
    followers: int | None = Field(default=None, ge=0)
    vip: bool = False


Priority = Literal["P1", "P2", "P3", "P4"]
SentimentLabel = Literal["negative", "neutral", "positive"]


class RawMention(BaseModel):
    """A public post as ingest saw it, before any scoring."""

    model_config = ConfigDict(extra="forbid")

    schema_: Literal["thirdring.mention.raw/v1"] = Field(default=RAW_SCHEMA, alias="schema")
    event_id: str = ""
    source: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9_.-]+$")
    external_id: str = Field(min_length=1, max_length=256)
    conversation_id: str = Field(default="", max_length=512)
    in_reply_to: str | None = Field(default=None, max_length=256)
    brand: str = Field(min_length=1, max_length=128)
    author: Author
    # True when the brand itself wrote the post: such a post answers the conversation.
    is_brand: bool = False
    text: str = Field(max_length=20_000)
    url: str | None = Field(default=None, max_length=2048)
    created_at: AwareDatetime
    ingested_at: AwareDatetime = Field(default_factory=utcnow)
    # Backfill replays history: cases and response times are recorded, but no notification
    # is sent for a deadline that had already passed when the event was processed.
    backfill: bool = False
    metadata: dict[str, Any] = Field(default_factory=dict)

    def model_post_init(self, __context: Any) -> None:
        expected = event_id_for(self.source, self.external_id)
        if not self.event_id:
            self.event_id = expected
        elif self.event_id != expected:
            raise ValueError(
                f"event_id {self.event_id} does not match source/external_id ({expected})"
            )
        if not self.conversation_id:
            self.conversation_id = f"{self.source}:{self.external_id}"

    @property
    def key(self) -> bytes:
        return self.conversation_id.encode()

    def to_bytes(self) -> bytes:
        return self.model_dump_json(by_alias=True).encode()


class Sentiment(BaseModel):
    label: SentimentLabel
    scores: dict[SentimentLabel, float]


class Complaint(BaseModel):
    is_complaint: bool
    score: float = Field(ge=0.0, le=1.0)


class Contribution(BaseModel):
    """How much one signal moved the urgency score (they add up to the score)."""

    reason: str
    weight: float


class Urgency(BaseModel):
    score: float = Field(ge=0.0, le=1.0)
    level: Priority
    # Short machine-readable reasons ("intent:refund", "vip customer"); alert parses intents.
    reasons: list[str] = Field(default_factory=list)
    contributions: list[Contribution] = Field(default_factory=list)


class Severity(BaseModel):
    """Complaint severity: 0 = no complaint, 1..4 rising (reproach, disapproval,
    accusation, blame)."""

    level: int = Field(ge=0, le=4)
    probs: dict[str, float] = Field(default_factory=dict)


class Scores(BaseModel):
    """What classify says about one text (also the offline ``thirdring classify`` output)."""

    lang: str
    sentiment: Sentiment
    complaint: Complaint
    urgency: Urgency
    severity: Severity | None = None
    model_version: str


class ScoredMention(BaseModel):
    """A raw mention with the classifier's scores attached."""

    model_config = ConfigDict(extra="forbid")

    schema_: Literal["thirdring.mention.scored/v1"] = Field(default=SCORED_SCHEMA, alias="schema")
    mention: RawMention
    scores: Scores
    scored_at: AwareDatetime = Field(default_factory=utcnow)

    @property
    def key(self) -> bytes:
        return self.mention.key

    def to_bytes(self) -> bytes:
        return self.model_dump_json(by_alias=True).encode()


class DeadLetter(BaseModel):
    """A record a consumer could not process, kept whole with the reason."""

    schema_: Literal["thirdring.deadletter/v1"] = Field(default=DEAD_LETTER_SCHEMA, alias="schema")
    reason: str
    stage: str  # which service / step refused it
    topic: str
    partition: int | None = None
    offset: int | None = None
    key: str | None = None
    # The original bytes, base64, so nothing is lost even when they are not valid UTF-8.
    original_b64: str
    # A record too large for a letter keeps only its start (the whole stays in ``topic`` at
    # ``partition``/``offset`` until the topic's retention removes it).
    truncated: bool = False
    original_size: int | None = None
    failed_at: AwareDatetime = Field(default_factory=utcnow)

    def to_bytes(self) -> bytes:
        return self.model_dump_json(by_alias=True).encode()
