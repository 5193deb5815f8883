"""SLA policies and the alerting file: targets, conditions, validation errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.alert.config import AlertingConfig, load_alerting
from services.alert.sla.policies import Facts, SlaPolicy, choose

FILE = """
calendars:
  rome:
    name: rome
    timezone: Europe/Rome
    windows: {mon: ["09:00-13:00", "14:00-18:00"], tue: ["09:00-18:00"]}
policies:
  - name: vip
    when: {vip: true}
    targets: {P1: 300, P2: 600, P3: 900, P4: 3600}
    warn_at: [0.5]
  - name: italy
    when: {language: [it], brand: [acme]}
    calendar: rome
    targets: {P1: 900, P2: 3600, P3: 14400, P4: null}
    next_response: {P1: 1800, P2: 7200, P3: 28800, P4: null}
    by_source: {mastodon: {P1: 600}}
  - name: default
teams:
  - name: care-it
    calendar: rome
    members: [{handle: anna, email: anna@example.com}, {handle: bo, role: lead}]
routing:
  - {name: italian, when: {language: [it]}, team: care-it}
"""


def facts(**kw: object) -> Facts:
    base = {"source": "twitter", "brand": "acme", "language": "en", "priority": "P2"}
    return Facts.model_validate({**base, **kw})


def test_file_loads_and_inlines_calendars(tmp_path: Path) -> None:
    path = tmp_path / "alerting.yaml"
    path.write_text(FILE)
    config = load_alerting(path)
    policies = config.resolved_policies()
    assert [p.name for p in policies] == ["vip", "italy", "default"]
    assert policies[1].calendar is not None and policies[1].calendar.timezone == "Europe/Rome"
    assert config.teams[0].members[1].role == "lead"


def test_policy_choice_by_conditions(tmp_path: Path) -> None:
    path = tmp_path / "alerting.yaml"
    path.write_text(FILE)
    policies = list(enumerate(load_alerting(path).resolved_policies()))
    assert choose(policies, facts(vip=True, language="it"))[1].name == "vip"
    assert choose(policies, facts(language="it"))[1].name == "italy"
    assert choose(policies, facts(language="it", brand="other"))[1].name == "default"


def test_targets_by_kind_source_and_language() -> None:
    policy = SlaPolicy(
        targets={"P1": 900, "P2": 3600, "P3": None, "P4": None},
        next_response={"P1": 1800, "P2": 7200, "P3": None, "P4": None},
        by_source={"mastodon": {"P1": 600}},
        by_language={"et": {"P1": 1200}},
    )
    assert policy.target("first", "P1", "twitter", "en") == 900
    assert policy.target("next", "P1", "twitter", "en") == 1800
    assert policy.target("first", "P1", "mastodon", "en") == 600
    assert policy.target("first", "P1", "mastodon", "et") == 1200  # language is most specific
    assert policy.target("first", "P3", "twitter", "en") is None
    assert policy.stages() == [("warning:0.5", 0.5), ("warning:0.8", 0.8), ("breach", 1.0)]


def test_legacy_single_warning_fraction() -> None:
    assert SlaPolicy.model_validate({"warn_at_fraction": 0.7}).warn_at == [0.7]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("policies: [{name: a, targets: {P9: 10}}]", "P9"),
        ("policies: [{name: a, targets: {P1: 0}}]", "positive"),
        ("policies: [{name: a, warn_at: [1.5]}]", "between 0 and 1"),
        ("policies: [{name: a}, {name: a}]", "unique"),
        ("routing: [{name: r, team: ghosts}]", "unknown team 'ghosts'"),
        ("teams: [{name: t, channels: [pager]}]", "unknown channel 'pager'"),
        ("policies: [{name: a, calendar: nowhere}]", "unknown calendar 'nowhere'"),
        ("policies: [{name: a, surprise: 1}]", "surprise"),
    ],
)
def test_bad_files_name_the_problem(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "alerting.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match="invalid alerting config") as exc:
        load_alerting(path)
    assert message in str(exc.value) and str(path) in str(exc.value)


def test_defaults_without_a_file() -> None:
    config = AlertingConfig()
    assert [p.name for p in config.resolved_policies()] == ["default"]
    assert config.default_channels == ["log"]


def test_example_file_in_deploy_is_valid() -> None:
    config = load_alerting(Path(__file__).parents[2] / "deploy" / "alerting.example.yaml")
    assert [t.name for t in config.teams] == ["care-it", "care-et"]
    assert config.resolved_policies()[1].calendar is not None
