"""The shared wording: time left, titles per stage, facts and Slack escaping."""

from __future__ import annotations

import pytest

from services.alert.notify import render
from tests.alert.notify.samples import CASE_URL, POST_URL, payload


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (250, "4 min 10 s left"),
        (250.4, "4 min 10 s left"),
        (240, "4 min left"),
        (45, "45 s left"),
        (0, "0 s left"),
        (3 * 3600 + 5 * 60 + 9, "3 h 5 min left"),
        (2 * 86400 + 3600, "2 d 1 h left"),
        (-120, "target missed 2 min ago"),
        (-125.2, "target missed 2 min 5 s ago"),
        (-0.3, "target missed just now"),
        (None, "no response target"),
    ],
)
def test_time_left_text(seconds: float | None, text: str) -> None:
    assert render.time_left_text(seconds) == text


def test_titles_per_stage() -> None:
    assert render.title(payload("warning")) == "⚠️ Warning: P1 case for acme, 4 min 10 s left"
    assert render.title(payload("warning", fraction=0.8)).startswith("⚠️ Warning at 80% of target:")
    # alert_payload sends "fraction": None for stages without one, and a stage_id alongside.
    assert render.title(payload("warning", fraction=None, stage_id="warning")).startswith(
        "⚠️ Warning:"
    )
    assert (
        render.title(payload("breach", fraction=None))
        == "🚨 Breach: P1 case for acme, target missed 2 min ago"
    )
    esc = payload("escalation", escalation={"step": 2, "target": "team_lead"})
    assert render.title(esc).startswith("📣 Escalation to team lead (step 2): P1 case for acme")
    assert render.title(payload("second_reminder")).startswith("🔔 Second reminder: P1")


def test_facts_and_links() -> None:
    facts = dict(render.facts(payload("breach")))
    assert facts["Priority"] == "P1" and facts["Target"] == "target missed 2 min ago"
    assert facts["Due"] == "2026-11-02 09:10:00 UTC"
    assert facts["Complaint score"] == "0.91" and facts["Language"] == "en"
    assert facts["Source"] == "twitter" and facts["Sentiment"] == "negative"
    assert "Time left" in dict(render.facts(payload("warning")))
    esc = dict(render.facts(payload("escalation", escalation={"step": 1, "target": "manager"})))
    assert esc["Escalated to"] == "manager (step 1)"
    assert render.links(payload()) == [("Open post", POST_URL)]
    with_case = payload(links={"case": CASE_URL}, post={"url": "javascript:alert(1)"})
    assert render.links(with_case) == [("Open case", CASE_URL)]


def test_missing_values_render_as_na() -> None:
    bare = {"stage": "breach", "case": {}, "post": {"text": None}}
    assert render.title(bare) == "🚨 Breach: P? case for unknown brand, no response target"
    assert all(v for _, v in render.facts(bare)) and render.post_text(bare) == ""


def test_slack_escape_and_truncate() -> None:
    assert render.slack_escape("<script>&") == "&lt;script&gt;&amp;"
    assert render.slack_escape("<!channel> a > b") == "&lt;!channel&gt; a &gt; b"
    escaped = render.slack_escape("x" * 8 + "&&&")  # never cut "&amp;" in half
    assert render.slack_truncate(escaped, 12) == "x" * 8 + "…"
    assert render.slack_truncate(escaped, 14) == "x" * 8 + "&amp;…"
    assert render.slack_truncate(escaped, 100) == escaped
    assert render.truncate("abcdef", 4) == "abc…" and render.truncate("abc", 4) == "abc"


def test_reasons_carry_what_they_added_where_known() -> None:
    assert render.reasons(payload()) == ["intent:refund", "keyword:never arrived"]
    weighed = payload(
        post={
            "reasons": ["intent:refund", "waited 3 h before seen", ""],
            "contributions": [
                {"reason": "intent:refund", "weight": 0.1},
                {"reason": "other signals", "weight": 0.4},
                "not a contribution",
            ],
        }
    )
    assert render.reasons(weighed) == ["intent:refund (+0.10)", "waited 3 h before seen"]
