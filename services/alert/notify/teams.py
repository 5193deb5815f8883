"""Microsoft Teams via a Workflows webhook: an Adaptive Card in the team's channel."""

from __future__ import annotations

from typing import Any

from services.alert.notify import render
from services.alert.notify.http import JsonPostNotifier

# Teams drops cards over ~28 KB; the post text is the only unbounded part.
POST_TEXT_MAX = 4000
TITLE_COLORS = {"warning": "Warning", "breach": "Attention", "escalation": "Attention"}


def _plain(text: str) -> dict[str, Any]:
    """RichTextBlock, not TextBlock: TextRun is never read as Markdown, so customer text
    like "[click](https://evil)" or "**URGENT**" shows exactly as written."""
    return {"type": "RichTextBlock", "inlines": [{"type": "TextRun", "text": text}]}


def adaptive_card(payload: dict[str, Any]) -> dict[str, Any]:
    """The card itself (schema 1.4, what Teams renders today)."""
    stage = str(payload.get("stage"))
    body: list[dict[str, Any]] = [
        {
            "type": "TextBlock",
            "text": render.title(payload),
            "weight": "Bolder",
            "size": "Medium",
            "color": TITLE_COLORS.get(stage, "Default"),
            "wrap": True,
        },
        _plain(render.truncate(render.post_text(payload), POST_TEXT_MAX) or "(no text)"),
        {
            "type": "FactSet",
            "facts": [{"title": k, "value": v} for k, v in render.facts(payload)],
        },
    ]
    reasons = render.reasons(payload)
    body.append(
        {
            "type": "RichTextBlock",
            "inlines": [
                {"type": "TextRun", "text": "Reasons: ", "weight": "Bolder"},
                {"type": "TextRun", "text": ", ".join(reasons) if reasons else "none recorded"},
                {"type": "TextRun", "text": f" · {render.case_ref(payload)}", "isSubtle": True},
            ],
        }
    )
    card: dict[str, Any] = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": body,
        "msteams": {"width": "Full"},
    }
    actions = [
        {"type": "Action.OpenUrl", "title": label, "url": url}
        for label, url in render.links(payload)
    ]
    if actions:
        card["actions"] = actions
    return card


def teams_message(payload: dict[str, Any]) -> dict[str, Any]:
    """The envelope the Workflows "Post card in a chat or channel" template expects."""
    return {
        "type": "message",
        "attachments": [
            {
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": None,
                "content": adaptive_card(payload),
            }
        ],
    }


class TeamsNotifier(JsonPostNotifier):
    """Posts Adaptive Cards to a Teams Workflows URL."""

    channel = "teams"

    def render(self, payload: dict[str, Any]) -> dict[str, Any]:
        return teams_message(payload)
