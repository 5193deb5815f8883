"""Microsoft Teams via a Workflows webhook: an Adaptive Card in the team's channel."""

from __future__ import annotations

import json
from typing import Any

import httpx

from services.alert.notify import render
from services.alert.notify.base import DeliveryError, Notifier

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


class TeamsNotifier(Notifier):
    """Posts to a Teams Workflows URL; its query string holds a signature, so it stays out of
    errors and repr."""

    channel = "teams"

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self._url = url
        self._client = httpx.AsyncClient(timeout=timeout)

    def __repr__(self) -> str:
        return "TeamsNotifier(url=<redacted>)"

    async def send(self, message_id: str, payload: dict[str, Any]) -> None:
        body = json.dumps(teams_message(payload), ensure_ascii=False).encode()
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": "thirdring-alert/0.1",
            "X-Thirdring-Delivery": message_id,
        }
        try:
            resp = await self._client.post(self._url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise DeliveryError(f"teams: {type(exc).__name__}: {exc}") from exc
        # Workflows answers 202 (queued); any 2xx means accepted, and retrying one would
        # post the card twice.
        if not 200 <= resp.status_code < 300:
            detail = f"teams: HTTP {resp.status_code}: {resp.text[:200]}"
            if retry_after := resp.headers.get("Retry-After"):
                detail += f" (retry after {retry_after} s)"
            raise DeliveryError(detail)

    async def close(self) -> None:
        await self._client.aclose()
