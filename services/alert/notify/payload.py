"""The alert payload every channel renders: the post, its scores and reasons, time left."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from shared.db.models import Case, Mention, ResponseCycle

PAYLOAD_VERSION = "thirdring.alert/v1"


def alert_payload(
    stage: str, case: Case, cycle: ResponseCycle, post: Mention | None, now: datetime
) -> dict[str, Any]:
    time_left = (cycle.due_at - now).total_seconds() if cycle.due_at else None
    family, _, arg = stage.partition(":")
    return {
        "schema": PAYLOAD_VERSION,
        # "warning" (with its fraction), "breach" or "escalation" (with its step).
        "stage": family,
        "stage_id": stage,
        "fraction": float(arg) if family == "warning" and arg else None,
        "fired_at": now.isoformat(),
        "case": {
            "id": case.id,
            "conversation_id": case.conversation_id,
            "brand": case.brand,
            "source": case.source,
            "priority": cycle.priority,
            "cycle": cycle.seq,
            "started_at": cycle.started_at.isoformat(),
            "due_at": cycle.due_at.isoformat() if cycle.due_at else None,
            "target_seconds": cycle.target_seconds,
            "time_left_seconds": time_left,
        },
        "post": {
            "event_id": cycle.started_event_id,
            "text": post.text if post else "",
            "author_id": post.author_id if post else None,
            "url": post.url if post else None,
            "lang": post.lang if post else None,
            "sentiment": post.sentiment if post else None,
            "complaint_score": post.complaint_score if post else None,
            "urgency_score": post.urgency_score if post else None,
            "reasons": post.reason_list if post else [],
            # {"reason", "weight"} per reason, then "other signals" and caps (they add up to
            # urgency_score); empty for posts stored before contributions were kept.
            "contributions": post.contribution_list if post else [],
        },
    }
