"""Slack incoming webhook: a Block Kit card the front line can act on from the channel."""

from __future__ import annotations

from typing import Any

from services.alert.notify import render
from services.alert.notify.http import JsonPostNotifier

# Slack's documented limits; going over any of them gets a 400 "invalid_blocks".
HEADER_MAX = 150
SECTION_TEXT_MAX = 3000
FIELD_TEXT_MAX = 2000
FIELDS_MAX = 10
BUTTON_TEXT_MAX = 75
BUTTON_URL_MAX = 3000
FALLBACK_MAX = 300


def slack_message(payload: dict[str, Any]) -> dict[str, Any]:
    """The webhook body: ``text`` for notifications and screen readers, ``blocks`` to read."""
    heading = render.title(payload)
    body = render.post_text(payload)
    quote = (
        "\n".join(f">{line}" for line in render.slack_escape(body).splitlines()) or "_(no text)_"
    )
    fields = [
        {
            "type": "mrkdwn",
            "text": render.slack_truncate(f"*{k}*\n{render.slack_escape(v)}", FIELD_TEXT_MAX),
        }
        for k, v in render.facts(payload)[:FIELDS_MAX]
    ]
    reasons = render.reasons(payload)
    reasons_text = ", ".join(reasons) if reasons else "none recorded"
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": render.truncate(heading, HEADER_MAX)},
        },
        {
            "type": "section",
            # verbatim: Slack must not link-ify names or mentions the customer typed.
            "text": {
                "type": "mrkdwn",
                "text": render.slack_truncate(quote, SECTION_TEXT_MAX),
                "verbatim": True,
            },
        },
        {"type": "section", "fields": fields},
        {
            "type": "context",
            "elements": [
                {
                    "type": "mrkdwn",
                    "text": render.slack_truncate(
                        f"*Reasons:* {render.slack_escape(reasons_text)}", SECTION_TEXT_MAX
                    ),
                },
                {"type": "mrkdwn", "text": render.slack_escape(render.case_ref(payload))},
            ],
        },
    ]
    buttons = [
        {
            "type": "button",
            "action_id": f"thirdring_{label.lower().replace(' ', '_')}",
            "text": {"type": "plain_text", "text": render.truncate(label, BUTTON_TEXT_MAX)},
            "url": url,
        }
        for label, url in render.links(payload)
        if len(url) <= BUTTON_URL_MAX
    ]
    if buttons:
        if payload.get("stage") != "warning":
            buttons[0]["style"] = "danger"
        blocks.append({"type": "actions", "elements": buttons})
    fallback = render.one_line(f"{heading} — {body}" if body else heading)
    return {
        "text": render.slack_truncate(render.slack_escape(fallback), FALLBACK_MAX),
        "blocks": blocks,
    }


class SlackNotifier(JsonPostNotifier):
    """Posts Block Kit messages to one Slack incoming webhook."""

    channel = "slack"

    def render(self, payload: dict[str, Any]) -> dict[str, Any]:
        return slack_message(payload)
