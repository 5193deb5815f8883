"""Small builders for events used across tests."""

from __future__ import annotations

from datetime import datetime

from shared.events import (
    Author,
    Complaint,
    Contribution,
    RawMention,
    ScoredMention,
    Scores,
    Sentiment,
    Urgency,
)


def raw(
    ext: str,
    at: datetime,
    *,
    conversation: str = "c1",
    brand_post: bool = False,
    text: str = "my order never arrived",
    backfill: bool = False,
    source: str = "test",
) -> RawMention:
    return RawMention(
        source=source,
        external_id=ext,
        conversation_id=conversation,
        brand="acme",
        author=Author(id="acme" if brand_post else "u1"),
        is_brand=brand_post,
        text=text,
        url=f"https://example.invalid/{ext}",
        created_at=at,
        backfill=backfill,
    )


def scored(mention: RawMention, level: str = "P1") -> ScoredMention:
    return ScoredMention(
        mention=mention,
        scores=Scores(
            lang="en",
            sentiment=Sentiment(
                label="negative", scores={"negative": 0.9, "neutral": 0.05, "positive": 0.05}
            ),
            complaint=Complaint(is_complaint=True, score=0.9),
            urgency=Urgency(
                score=0.9,
                level=level,
                reasons=["intent:refund"],
                contributions=[
                    Contribution(reason="intent:refund", weight=0.1),
                    Contribution(reason="other signals", weight=0.8),
                ],
            ),
            model_version="test",
        ),
    )
