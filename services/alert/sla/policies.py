"""SLA policies: targets per priority (and per channel or language), the calendar they count
in, warning stages and the escalation chain after a breach; chosen by conditions.

A policy is stored as versions (``sla_policies``): a case keeps the version it started
with, and an edit applies to new cases only.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from services.alert.sla.calendars import Calendar

PRIORITIES = ("P1", "P2", "P3", "P4")
PRIORITY_RANK = {p: n for n, p in enumerate(PRIORITIES, start=1)}
Targets = dict[str, float | None]
CycleKind = Literal["first", "next"]


def _check_targets(v: Targets) -> Targets:
    unknown = set(v) - set(PRIORITIES)
    if unknown:
        raise ValueError(f"unknown priorities {sorted(unknown)}; use {', '.join(PRIORITIES)}")
    for prio, seconds in v.items():
        if seconds is not None and seconds <= 0:
            raise ValueError(f"target for {prio} must be positive seconds or null (no target)")
    return v


class Facts(BaseModel):
    """What a policy or routing rule can look at, taken from the case's opening post."""

    source: str
    brand: str
    language: str
    priority: str
    vip: bool = False
    intents: list[str] = Field(default_factory=list)


class Conditions(BaseModel):
    """All given fields must match; a list matches any of its values. Empty = always."""

    model_config = ConfigDict(extra="forbid")

    source: list[str] | None = None
    brand: list[str] | None = None
    language: list[str] | None = None
    priority: list[str] | None = None
    intent: list[str] | None = None
    vip: bool | None = None

    def matches(self, facts: Facts) -> bool:
        checks = [
            (self.source, facts.source),
            (self.brand, facts.brand),
            (self.language, facts.language),
            (self.priority, facts.priority),
        ]
        if any(allowed is not None and value not in allowed for allowed, value in checks):
            return False
        if self.intent is not None and not set(self.intent) & set(facts.intents):
            return False
        return self.vip is None or self.vip == facts.vip


EscalationTarget = Literal["team", "team_lead", "manager"]


class EscalationStep(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Wait after the previous step (the first step: after the breach).
    after_seconds: float = Field(ge=0)
    notify: EscalationTarget
    # Channels to use; empty = the team's channels (or the defaults without a team).
    channels: list[str] = Field(default_factory=list)


DEFAULT_ESCALATION = [
    EscalationStep(after_seconds=600, notify="team_lead"),
    EscalationStep(after_seconds=1800, notify="manager"),
]


class SlaPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = "default"
    when: Conditions = Field(default_factory=Conditions)
    # First-response seconds per priority; null = no target (no alerts).
    targets: Targets = Field(
        default_factory=lambda: {"P1": 15 * 60, "P2": 60 * 60, "P3": 4 * 3600, "P4": None}
    )
    # Next-response targets (after the brand answered and the customer wrote again).
    next_response: Targets | None = None
    # Overrides of ``targets`` by source (channel) and by language; the most specific wins:
    # language, then source, then the base targets.
    by_source: dict[str, Targets] = Field(default_factory=dict)
    by_language: dict[str, Targets] = Field(default_factory=dict)
    # Business hours the targets count in; None = wall-clock time.
    calendar: Calendar | None = None
    # Warnings at these fractions of the target, then the breach at 1.0.
    warn_at: list[float] = Field(default_factory=lambda: [0.5, 0.8])
    escalation: list[EscalationStep] = Field(default_factory=lambda: list(DEFAULT_ESCALATION))

    @model_validator(mode="before")
    @classmethod
    def _legacy_single_warning(cls, data: Any) -> Any:
        # ``warn_at_fraction: 0.8`` (one warning) reads as ``warn_at: [0.8]``.
        if isinstance(data, dict) and "warn_at_fraction" in data:
            data = dict(data)
            data.setdefault("warn_at", [data.pop("warn_at_fraction")])
        return data

    @field_validator("targets", "next_response")
    @classmethod
    def _targets(cls, v: Targets | None) -> Targets | None:
        return None if v is None else {p: _check_targets(v).get(p) for p in PRIORITIES}

    @field_validator("by_source", "by_language")
    @classmethod
    def _overrides(cls, v: dict[str, Targets]) -> dict[str, Targets]:
        return {k: _check_targets(t) for k, t in v.items()}

    @field_validator("warn_at")
    @classmethod
    def _fractions(cls, v: list[float]) -> list[float]:
        if any(not 0 < f < 1 for f in v):
            raise ValueError("warn_at fractions must be between 0 and 1 (exclusive)")
        return sorted(set(v))

    def target(self, kind: CycleKind, priority: str, source: str, language: str) -> float | None:
        """Seconds allowed for this cycle, or None for no target."""
        for overrides, key in ((self.by_language, language), (self.by_source, source)):
            if key in overrides and priority in overrides[key]:
                return overrides[key][priority]
        base = self.next_response if kind == "next" and self.next_response else self.targets
        return base.get(priority)

    def stages(self) -> list[tuple[str, float]]:
        """(stage name, fraction of the target) in firing order, the breach last."""
        return [(f"warning:{f:g}", f) for f in self.warn_at] + [("breach", 1.0)]


# The demo policy: targets in seconds so a newcomer sees a warning and a breach in a minute.
DEMO_POLICY = SlaPolicy(
    name="demo",
    targets={"P1": 20, "P2": 30, "P3": 40, "P4": None},
    warn_at=[0.5],
    escalation=[EscalationStep(after_seconds=15, notify="team_lead")],
)


def more_urgent(a: str, b: str) -> bool:
    """True when priority ``a`` is more urgent than ``b`` (P1 beats P2)."""
    return PRIORITY_RANK[a] < PRIORITY_RANK[b]


def choose(policies: list[tuple[int, SlaPolicy]], facts: Facts) -> tuple[int, SlaPolicy] | None:
    """The first policy (in order) whose conditions match."""
    return next(((pid, p) for pid, p in policies if p.when.matches(facts)), None)
