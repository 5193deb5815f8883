"""The alerting configuration file (YAML): calendars, SLA policies, teams, routing rules,
notification channels and incident grouping.

The file is declarative: at start the alert service syncs it into the database (a changed
policy becomes a new version; teams and routing rules are replaced). Without a file the
built-in defaults apply (the demo policy under ``thirdring up``). Secrets — webhook URLs,
SMTP passwords — are never written in the file: each is named by an environment variable
(``*_env``) or a file (``*_file``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from services.alert.sla.calendars import Calendar
from services.alert.sla.policies import DEMO_POLICY, Conditions, SlaPolicy
from shared.config import Settings


class MemberSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    handle: str
    name: str = ""
    email: str | None = None
    role: Literal["agent", "lead", "manager"] = "agent"


class TeamSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    # Working hours: a calendar name from ``calendars`` or an inline calendar; none = 24/7.
    calendar: str | Calendar | None = None
    capacity: int | None = Field(default=None, ge=1)
    reassign_after_seconds: float | None = Field(default=None, gt=0)
    channels: list[str] = Field(default_factory=list)
    members: list[MemberSpec] = Field(default_factory=list)


class RoutingRuleSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    when: Conditions = Field(default_factory=Conditions)
    team: str


class ChannelSpec(BaseModel):
    """Where alerts go. Secrets come from ``*_env`` variables or ``*_file`` paths."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["log", "webhook", "slack", "teams", "email"]
    url_env: str | None = None
    url_file: Path | None = None
    secret_env: str | None = None
    secret_file: Path | None = None
    # e-mail
    host: str = "127.0.0.1"
    port: int = 25
    sender: str = "thirdring@localhost"
    recipients: list[str] = Field(default_factory=list)
    username: str | None = None
    password_env: str | None = None
    password_file: Path | None = None
    starttls: bool = False
    use_tls: bool = False

    def secret(self, kind: Literal["url", "secret", "password"]) -> str | None:
        env: str | None = getattr(self, f"{kind}_env")
        path: Path | None = getattr(self, f"{kind}_file")
        if path is not None:
            return path.read_text().strip()
        if env is not None:
            value = os.environ.get(env)
            if not value:
                raise ValueError(f"environment variable {env} is not set")
            return value
        return None


class IncidentSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Cases of one brand with the same intent within this window form an incident...
    window_seconds: float = Field(default=900, gt=0)
    # ...once there are at least this many of them.
    threshold: int = Field(default=3, ge=2)


class PolicyEntry(SlaPolicy):
    """A policy in the file: its calendar may name one of ``calendars``."""

    calendar: str | Calendar | None = None  # type: ignore[assignment]


class AlertingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    calendars: dict[str, Calendar] = Field(default_factory=dict)
    policies: list[PolicyEntry] = Field(default_factory=lambda: [PolicyEntry()])
    teams: list[TeamSpec] = Field(default_factory=list)
    routing: list[RoutingRuleSpec] = Field(default_factory=list)
    channels: dict[str, ChannelSpec] = Field(default_factory=dict)
    # Channels for cases without a team (and the team-less parts of escalation).
    default_channels: list[str] = Field(default_factory=lambda: ["log"])
    incidents: IncidentSettings = Field(default_factory=IncidentSettings)

    @model_validator(mode="after")
    def _references(self) -> AlertingConfig:
        names = [p.name for p in self.policies]
        if len(set(names)) != len(names):
            raise ValueError("policy names must be unique")
        teams = {t.name for t in self.teams}
        for rule in self.routing:
            if rule.team not in teams:
                raise ValueError(f"routing rule {rule.name!r} names unknown team {rule.team!r}")
        known_channels = set(self.channels) | {"log", "webhook"}
        used = [c for t in self.teams for c in t.channels] + self.default_channels
        used += [c for p in self.policies for s in p.escalation for c in s.channels]
        for c in used:
            if c not in known_channels:
                raise ValueError(f"unknown channel {c!r}; define it under channels")
        for item in [*self.policies, *self.teams]:
            if isinstance(item.calendar, str) and item.calendar not in self.calendars:
                raise ValueError(f"{item.name!r} names unknown calendar {item.calendar!r}")
        return self

    def calendar(self, ref: str | Calendar | None) -> Calendar | None:
        return self.calendars[ref] if isinstance(ref, str) else ref

    def resolved_policies(self) -> list[SlaPolicy]:
        """Policies with their calendars inlined, so a stored version is self-contained."""
        return [
            SlaPolicy.model_validate({**p.model_dump(), "calendar": self.calendar(p.calendar)})
            for p in self.policies
        ]


def load_alerting(path: Path) -> AlertingConfig:
    """Read the alerting file, with an error naming the file and the field."""
    try:
        data: Any = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"cannot read alerting config {path}: {exc}") from exc
    try:
        return AlertingConfig.model_validate(data)
    except ValueError as exc:
        raise ValueError(f"invalid alerting config {path}: {exc}") from exc


def alerting_config(settings: Settings) -> AlertingConfig:
    if settings.alerting_file is not None:
        config = load_alerting(settings.alerting_file)
    elif settings.demo:
        config = AlertingConfig(policies=[PolicyEntry.model_validate(DEMO_POLICY.model_dump())])
    else:
        config = AlertingConfig()
    if settings.notify_webhook_url and "webhook" not in config.default_channels:
        config.default_channels.append("webhook")
    return config
