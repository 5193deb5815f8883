"""Rows written straight into the tables for the stats tests: a post, a case, a cycle.

Every builder takes what the tests vary as arguments and the rest as keyword overrides.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from shared.db.models import Case, Mention, ResponseCycle


def mention_row(
    event: str,
    source: str,
    at: datetime,
    *,
    lag: float = 1.0,
    brand: str = "acme",
    sentiment: str = "negative",
    complaint: float = 0.9,
    priority: str = "P2",
    **extra: Any,
) -> Mention:
    """A customer's post, written at ``at`` and ingested ``lag`` seconds later."""
    values: dict[str, Any] = {
        "event_id": event,
        "source": source,
        "external_id": event,
        "conversation_id": event,
        "brand": brand,
        "author_id": "u1",
        "is_brand": False,
        "text": "help",
        "url": None,
        "created_at": at,
        "ingested_at": at + timedelta(seconds=lag),
        "stored_at": at,
        "lang": "en",
        "sentiment": sentiment,
        "negative_score": 0.9,
        "complaint_score": complaint,
        "urgency_score": 0.5,
        "priority": priority,
        "reasons": {},
        "model_version": "test",
    }
    return Mention(**(values | extra))


def case_row(
    conversation: str, source: str, priority: str, opened_at: datetime, **extra: Any
) -> Case:
    """An open case with one cycle (override ``status``, ``cycles``, team, policy…)."""
    values: dict[str, Any] = {
        "conversation_id": conversation,
        "brand": "acme",
        "source": source,
        "status": "open",
        "priority": priority,
        "opened_at": opened_at,
        "answered_at": None,
        "reply_url": None,
        "cycles": 1,
        "created_at": opened_at,
        "updated_at": opened_at,
        "language": "en",
    }
    return Case(**(values | extra))


def cycle_row(
    case_id: int, seq: int, started_at: datetime, event: str, priority: str, **extra: Any
) -> ResponseCycle:
    """A waiting wall-clock cycle with a one-hour target and no deadline yet."""
    values: dict[str, Any] = {
        "case_id": case_id,
        "seq": seq,
        "started_at": started_at,
        "started_event_id": event,
        "kind": "first" if seq == 1 else "next",
        "priority": priority,
        "target_seconds": 3600,
        "business_time": False,
        "paused_seconds": 0.0,
        "paused_at": None,
        "due_at": None,
        "answered_at": None,
        "answered_event_id": None,
        "response_seconds": None,
        "breached": False,
    }
    return ResponseCycle(**(values | extra))
