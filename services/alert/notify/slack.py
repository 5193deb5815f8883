"""Slack incoming webhook: a Block Kit card the front line can act on from the channel."""

from __future__ import annotations

import json
from typing import Any

import httpx

from services.alert.notify import render
from services.alert.notify.base import DeliveryError, Notifier

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


class SlackNotifier(Notifier):
    """Posts to one Slack incoming webhook; the URL is a secret, so it never appears in errors."""

    channel = "slack"

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self._url = url
        self._client = httpx.AsyncClient(timeout=timeout)

    def __repr__(self) -> str:
        return "SlackNotifier(url=<redacted>)"

    async def send(self, message_id: str, payload: dict[str, Any]) -> None:
        body = json.dumps(slack_message(payload), ensure_ascii=False).encode()
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": "thirdring-alert/0.1",
            "X-Thirdring-Delivery": message_id,
        }
        try:
            resp = await self._client.post(self._url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise DeliveryError(f"slack: {type(exc).__name__}: {exc}") from exc
        if not 200 <= resp.status_code < 300:
            detail = f"slack: HTTP {resp.status_code}: {resp.text[:200]}"
            if retry_after := resp.headers.get("Retry-After"):
                detail += f" (retry after {retry_after} s)"
            raise DeliveryError(detail)

    async def close(self) -> None:
        await self._client.aclose()
