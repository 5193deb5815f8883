"""Words shared by every channel, so Slack, Teams and e-mail tell the team the same thing."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from shared.durations import duration_text

STAGE_ICONS = {"warning": "⚠️", "breach": "🚨", "escalation": "📣"}
NO_VALUE = "n/a"


def _case(payload: dict[str, Any]) -> dict[str, Any]:
    return payload.get("case") or {}


def _post(payload: dict[str, Any]) -> dict[str, Any]:
    return payload.get("post") or {}


def time_left_text(seconds: float | None) -> str:
    """ "4 min 10 s left" before the target, "target missed 2 min ago" after it."""
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return "no response target"
    if seconds >= 0:
        return f"{duration_text(seconds)} left"
    if round(-seconds) == 0:
        return "target missed just now"
    return f"target missed {duration_text(seconds)} ago"


def stage_label(payload: dict[str, Any]) -> str:
    """The stage in words; unknown stages still read sensibly, so new stages need no deploy."""
    stage = str(payload.get("stage") or "alert")
    if stage == "warning":
        fraction = payload.get("fraction")
        if isinstance(fraction, int | float) and 0 < fraction < 1:
            return f"Warning at {round(fraction * 100)}% of target"
        return "Warning"
    if stage == "breach":
        return "Breach"
    if stage == "escalation":
        esc = payload.get("escalation") or {}
        label = "Escalation"
        if esc.get("target"):
            label += f" to {str(esc['target']).replace('_', ' ')}"
        if esc.get("step") is not None:
            label += f" (step {esc['step']})"
        return label
    return stage.replace("_", " ").strip().capitalize() or "Alert"


def title(payload: dict[str, Any]) -> str:
    """One line that says how bad, whose and how long: "⚠️ Warning: P1 case for acme, 4 min left"."""
    case = _case(payload)
    icon = STAGE_ICONS.get(str(payload.get("stage")), "🔔")
    priority = case.get("priority") or "P?"
    brand = case.get("brand") or "unknown brand"
    left = time_left_text(case.get("time_left_seconds"))
    return f"{icon} {stage_label(payload)}: {priority} case for {brand}, {left}"


def one_line(text: str) -> str:
    """Collapse newlines and runs of spaces (headers, subjects and fallbacks are one line)."""
    return " ".join(text.split())


def truncate(text: str, limit: int, ellipsis: str = "…") -> str:
    if len(text) <= limit:
        return text
    return text[: max(limit - len(ellipsis), 0)].rstrip() + ellipsis


def _number(value: Any) -> str:
    if value is None:
        return NO_VALUE
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def _due(value: Any) -> str:
    """Absolute due time: unlike "time left" it stays true when a retry delivers late."""
    if not value:
        return NO_VALUE
    try:
        due = datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)
    return due.strftime("%Y-%m-%d %H:%M:%S %Z").strip()


def facts(payload: dict[str, Any]) -> list[tuple[str, str]]:
    """The same label/value pairs for every channel (at most 10: Slack's section field cap)."""
    case, post = _case(payload), _post(payload)
    left = case.get("time_left_seconds")
    rows = [
        ("Priority", str(case.get("priority") or NO_VALUE)),
        ("Time left" if left is None or left >= 0 else "Target", time_left_text(left)),
        ("Due", _due(case.get("due_at"))),
        ("Sentiment", _number(post.get("sentiment"))),
        ("Complaint score", _number(post.get("complaint_score"))),
        ("Urgency score", _number(post.get("urgency_score"))),
        ("Language", str(post.get("lang") or NO_VALUE)),
        ("Source", str(case.get("source") or NO_VALUE)),
    ]
    esc = payload.get("escalation") or {}
    if payload.get("stage") == "escalation" and esc:
        target = str(esc.get("target") or NO_VALUE).replace("_", " ")
        rows.append(("Escalated to", f"{target} (step {esc.get('step', '?')})"))
    return rows


def reasons(payload: dict[str, Any]) -> list[str]:
    """The reasons, each with what it added to the urgency score where known:
    "intent:refund (+0.10)"."""
    post = _post(payload)
    added = {
        c.get("reason"): c.get("weight")
        for c in post.get("contributions") or []
        if isinstance(c, dict)
    }
    out = []
    for reason in post.get("reasons") or []:
        if not reason:
            continue
        weight = added.get(reason)
        out.append(f"{reason} (+{weight:.2f})" if isinstance(weight, float) else str(reason))
    return out


def post_text(payload: dict[str, Any]) -> str:
    return str(_post(payload).get("text") or "")


def case_ref(payload: dict[str, Any]) -> str:
    """Where to look it up: "case 12, cycle 1" (ids the team can search for)."""
    case = _case(payload)
    return f"case {case.get('id', '?')}, cycle {case.get('cycle', '?')}"


def _is_web_url(url: Any) -> bool:
    return isinstance(url, str) and url.lower().startswith(("https://", "http://"))


def links(payload: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, url) for the post and the case; only http(s), which every channel accepts."""
    out = []
    post_url = _post(payload).get("url")
    if _is_web_url(post_url):
        out.append(("Open post", post_url))
    case_url = (payload.get("links") or {}).get("case")
    if _is_web_url(case_url):
        out.append(("Open case", case_url))
    return out


def slack_escape(text: str) -> str:
    """Slack's three control characters; escaping "<" also defuses <!channel> and fake links."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_truncate(escaped: str, limit: int) -> str:
    """Truncate already-escaped mrkdwn without cutting an entity such as "&amp;" in half."""
    if len(escaped) <= limit:
        return escaped
    cut = escaped[: limit - 1]
    amp = cut.rfind("&", max(len(cut) - 4, 0))
    if amp != -1 and ";" not in cut[amp:]:
        cut = cut[:amp]
    return cut.rstrip() + "…"
