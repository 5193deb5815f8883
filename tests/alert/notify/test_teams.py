"""Teams: the Workflows envelope and Adaptive Card a real HTTP server receives."""

from __future__ import annotations

import json
from typing import Any

import pytest

from services.alert.notify import render
from services.alert.notify.base import DeliveryError
from services.alert.notify.teams import TeamsNotifier
from shared.ports import free_port
from tests.alert.notify.samples import CASE_URL, POST_URL, StatusServer, payload
from tests.http_receiver import HttpReceiver

# Adaptive Cards 1.4 element types (https://adaptivecards.io/explorer/).
ELEMENTS_1_4 = {
    "TextBlock", "RichTextBlock", "FactSet", "Image", "ImageSet", "Media", "Container",
    "ColumnSet", "ActionSet", "Input.Text", "Input.Number", "Input.Date", "Input.Time",
    "Input.Toggle", "Input.ChoiceSet",
}  # fmt: skip
COLORS = {"Default", "Dark", "Light", "Accent", "Good", "Warning", "Attention"}


def check_element(el: dict[str, Any]) -> None:
    assert el["type"] in ELEMENTS_1_4, el
    if el["type"] == "TextBlock":
        assert isinstance(el["text"], str) and el["text"]
        assert el.get("color", "Default") in COLORS
        assert el.get("weight", "Default") in {"Default", "Lighter", "Bolder"}
        assert el.get("size", "Default") in {"Default", "Small", "Medium", "Large", "ExtraLarge"}
        assert isinstance(el.get("wrap", False), bool)
    elif el["type"] == "RichTextBlock":
        assert el["inlines"]
        for run in el["inlines"]:
            assert isinstance(run, str) or (run["type"] == "TextRun" and run["text"]), run
    elif el["type"] == "FactSet":
        assert el["facts"]
        for fact in el["facts"]:
            assert set(fact) == {"title", "value"}
            assert isinstance(fact["title"], str) and isinstance(fact["value"], str)


def check_teams_message(msg: dict[str, Any]) -> dict[str, Any]:
    """The Workflows webhook envelope with one Adaptive Card; returns the card."""
    assert msg["type"] == "message"
    [att] = msg["attachments"]
    assert att["contentType"] == "application/vnd.microsoft.card.adaptive"
    assert "contentUrl" in att and att["contentUrl"] is None
    card = att["content"]
    assert card["$schema"] == "http://adaptivecards.io/schemas/adaptive-card.json"
    assert card["type"] == "AdaptiveCard" and card["version"] == "1.4"
    assert isinstance(card["body"], list) and card["body"]
    for el in card["body"]:
        check_element(el)
    for action in card.get("actions", []):
        assert action["type"] == "Action.OpenUrl"
        assert isinstance(action["title"], str) and action["title"]
        assert action["url"].startswith(("https://", "http://"))
    assert len(json.dumps(msg).encode()) < 28 * 1024, "Teams rejects messages over ~28 KB"
    return card  # type: ignore[no-any-return]


async def _send(url: str, p: dict[str, Any]) -> None:
    notifier = TeamsNotifier(url, timeout=2.0)
    try:
        await notifier.send("42", p)
    finally:
        await notifier.close()


async def test_breach_card_has_documented_shape(receiver: HttpReceiver) -> None:
    p = payload("breach", links={"case": CASE_URL})
    await _send(receiver.url, p)
    [req] = receiver.requests
    assert req.headers["x-thirdring-delivery"] == "42"
    card = check_teams_message(req.json())
    title, text, factset, reasons = card["body"]
    assert title["text"] == render.title(p) and title["weight"] == "Bolder"
    assert title["color"] == "Attention" and title["wrap"] is True
    assert text["inlines"][0]["text"] == "my order never arrived\nand nobody answers"
    assert [(f["title"], f["value"]) for f in factset["facts"]] == render.facts(p)
    assert "intent:refund" in reasons["inlines"][1]["text"]
    assert [(a["title"], a["url"]) for a in card["actions"]] == [
        ("Open post", POST_URL),
        ("Open case", CASE_URL),
    ]


async def test_warning_is_amber_and_markdown_is_not_interpreted(receiver: HttpReceiver) -> None:
    hostile = "**URGENT** [click](https://evil.example) <b>x</b> {{DATE(2017-02-14T06:00:00Z)}}"
    await _send(receiver.url, payload("warning", post={"text": hostile, "url": None}))
    card = check_teams_message(receiver.requests[0].json())
    assert card["body"][0]["color"] == "Warning"
    # RichTextBlock/TextRun: shown verbatim, never as Markdown.
    assert card["body"][1] == {
        "type": "RichTextBlock",
        "inlines": [{"type": "TextRun", "text": hostile}],
    }
    assert "actions" not in card


async def test_escalation_and_unknown_stage(receiver: HttpReceiver) -> None:
    await _send(receiver.url, payload("escalation", escalation={"step": 1, "target": "manager"}))
    await _send(receiver.url, payload("nudge", post={"text": "x" * 50_000}))
    esc, nudge = (check_teams_message(r.json()) for r in receiver.requests)
    assert esc["body"][0]["text"].startswith("📣 Escalation to manager (step 1)")
    assert ("Escalated to", "manager (step 1)") in [
        (f["title"], f["value"]) for f in esc["body"][2]["facts"]
    ]
    assert (
        nudge["body"][0]["text"].startswith("🔔 Nudge:") and nudge["body"][0]["color"] == "Default"
    )


async def test_workflows_202_is_success() -> None:
    with StatusServer(202) as server:
        await _send(server.url, payload())


async def test_target_down_is_a_delivery_error(receiver: HttpReceiver) -> None:
    receiver.fail_next = 1
    with pytest.raises(DeliveryError, match="503"):
        await _send(receiver.url, payload())


async def test_rejected_card_and_unreachable_are_delivery_errors() -> None:
    with StatusServer(400, '{"error":{"code":"InvalidRequestContent"}}') as server:
        with pytest.raises(DeliveryError, match=r"HTTP 400: .*InvalidRequestContent"):
            await _send(server.url, payload())
    with pytest.raises(DeliveryError, match="ConnectError"):
        await _send(f"http://127.0.0.1:{free_port()}/hook", payload())
