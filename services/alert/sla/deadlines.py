"""Deadlines of one response cycle under an SLA policy."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from shared.config import SlaPolicy

PRIORITY_RANK = {"P1": 1, "P2": 2, "P3": 3, "P4": 4}


@dataclass(frozen=True)
class StageDeadline:
    stage: str  # warning | breach
    due_at: datetime


def more_urgent(a: str, b: str) -> bool:
    """True when priority ``a`` is more urgent than ``b`` (P1 beats P2)."""
    return PRIORITY_RANK[a] < PRIORITY_RANK[b]


def due_at(policy: SlaPolicy, priority: str, started_at: datetime) -> datetime | None:
    target = policy.target_for(priority)
    return None if target is None else started_at + timedelta(seconds=target)


def stage_deadlines(policy: SlaPolicy, started_at: datetime, due: datetime) -> list[StageDeadline]:
    """The warning at ``warn_at_fraction`` of the target, and the breach at the target."""
    target = due - started_at
    return [
        StageDeadline("warning", started_at + target * policy.warn_at_fraction),
        StageDeadline("breach", due),
    ]
