"""Slack: the Block Kit message a real HTTP server receives, checked against Slack's shapes."""

from __future__ import annotations

from typing import Any

import pytest

from services.alert.notify.base import DeliveryError
from services.alert.notify.slack import SlackNotifier
from shared.ports import free_port
from tests.alert.notify.samples import CASE_URL, POST_URL, StatusServer, payload
from tests.http_receiver import HttpReceiver

TEXT_KEYS = {"type", "text", "emoji", "verbatim"}


def check_text(obj: Any, kinds: tuple[str, ...], limit: int) -> str:
    """A composition text object: https://api.slack.com/reference/block-kit/composition-objects"""
    assert isinstance(obj, dict) and set(obj) <= TEXT_KEYS, obj
    assert obj["type"] in kinds, obj
    assert isinstance(obj["text"], str) and 1 <= len(obj["text"]) <= limit, obj
    if obj["type"] == "plain_text":
        assert "verbatim" not in obj
    else:
        assert "emoji" not in obj
    return str(obj["text"])


def check_button(el: dict[str, Any]) -> None:
    assert set(el) <= {"type", "text", "action_id", "url", "value", "style", "confirm"}, el
    assert el["type"] == "button"
    check_text(el["text"], ("plain_text",), 75)
    assert isinstance(el["url"], str) and el["url"].startswith("http") and len(el["url"]) <= 3000
    assert 1 <= len(el.get("action_id", "x")) <= 255
    assert el.get("style", "primary") in ("primary", "danger")


def check_slack_message(msg: dict[str, Any]) -> None:
    """Structural validation of an incoming-webhook body (the subset of Block Kit we use)."""
    assert set(msg) <= {"text", "blocks"}
    assert isinstance(msg["text"], str) and msg["text"] and "\n" not in msg["text"]
    blocks = msg["blocks"]
    assert isinstance(blocks, list) and 1 <= len(blocks) <= 50
    for block in blocks:
        kind = block["type"]
        assert kind in {"header", "section", "context", "actions", "divider"}, kind
        assert len(block.get("block_id", "")) <= 255
        if kind == "header":
            assert set(block) <= {"type", "text", "block_id"}
            check_text(block["text"], ("plain_text",), 150)
        elif kind == "section":
            assert set(block) <= {"type", "text", "fields", "block_id", "accessory"}
            assert "text" in block or "fields" in block
            if "text" in block:
                check_text(block["text"], ("plain_text", "mrkdwn"), 3000)
            if "fields" in block:
                assert 1 <= len(block["fields"]) <= 10
                for f in block["fields"]:
                    check_text(f, ("plain_text", "mrkdwn"), 2000)
        elif kind == "context":
            assert set(block) <= {"type", "elements", "block_id"}
            assert 1 <= len(block["elements"]) <= 10
            for el in block["elements"]:
                check_text(el, ("plain_text", "mrkdwn"), 3000)
        elif kind == "actions":
            assert set(block) <= {"type", "elements", "block_id"}
            assert 1 <= len(block["elements"]) <= 25
            ids = [el.get("action_id") for el in block["elements"]]
            assert len(set(ids)) == len(ids), "action_id must be unique in a block"
            for el in block["elements"]:
                check_button(el)


def by_type(msg: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [b for b in msg["blocks"] if b["type"] == kind]


async def _send(url: str, p: dict[str, Any], message_id: str = "41") -> None:
    notifier = SlackNotifier(url, timeout=2.0)
    try:
        await notifier.send(message_id, p)
    finally:
        await notifier.close()


async def test_breach_message_has_documented_shape(receiver: HttpReceiver) -> None:
    await _send(receiver.url, payload("breach", links={"case": CASE_URL}))
    [req] = receiver.requests
    assert req.headers["content-type"].startswith("application/json")
    assert req.headers["x-thirdring-delivery"] == "41"
    msg = req.json()
    check_slack_message(msg)
    [header] = by_type(msg, "header")
    assert header["text"]["text"] == "🚨 Breach: P1 case for acme, target missed 2 min ago"
    quote, facts = by_type(msg, "section")
    assert quote["text"]["text"] == ">my order never arrived\n>and nobody answers"
    assert facts["fields"][0]["text"] == "*Priority*\nP1"
    assert "*Target*\ntarget missed 2 min ago" in [f["text"] for f in facts["fields"]]
    [context] = by_type(msg, "context")
    assert "intent:refund, keyword:never arrived" in context["elements"][0]["text"]
    [actions] = by_type(msg, "actions")
    assert [b["url"] for b in actions["elements"]] == [POST_URL, CASE_URL]
    assert msg["text"].startswith("🚨 Breach: P1 case for acme")


async def test_warning_without_links_has_no_actions(receiver: HttpReceiver) -> None:
    await _send(receiver.url, payload("warning", fraction=0.5, post={"url": None}))
    msg = receiver.requests[0].json()
    check_slack_message(msg)
    assert by_type(msg, "actions") == []
    assert by_type(msg, "header")[0]["text"]["text"].startswith("⚠️ Warning at 50% of target")


async def test_hostile_and_long_text_is_escaped_and_truncated(receiver: HttpReceiver) -> None:
    text = "<script>&</script> <!channel> " + "&" * 4000
    p = payload(
        "escalation",
        escalation={"step": 2, "target": "manager"},
        case={"brand": "b" * 200},
        post={"text": text, "reasons": ["<@U123>"]},
    )
    await _send(receiver.url, p)
    msg = receiver.requests[0].json()
    check_slack_message(msg)
    body = by_type(msg, "section")[0]["text"]["text"]
    assert body.startswith(">&lt;script&gt;&amp;&lt;/script&gt; &lt;!channel&gt; &amp;")
    assert "<" not in body and len(body) <= 3000 and body.endswith("&amp;…")
    assert len(by_type(msg, "header")[0]["text"]["text"]) == 150
    assert "&lt;@U123&gt;" in by_type(msg, "context")[0]["elements"][0]["text"]
    assert "<" not in msg["text"] and len(msg["text"]) <= 300


async def test_unknown_stage_renders_generically(receiver: HttpReceiver) -> None:
    await _send(receiver.url, payload("follow_up", post={"text": ""}))
    msg = receiver.requests[0].json()
    check_slack_message(msg)
    assert by_type(msg, "header")[0]["text"]["text"].startswith("🔔 Follow up: P1")
    assert by_type(msg, "section")[0]["text"]["text"] == "_(no text)_"


async def test_target_down_is_a_delivery_error(receiver: HttpReceiver) -> None:
    receiver.fail_next = 1
    with pytest.raises(DeliveryError, match="503"):
        await _send(receiver.url, payload())
    assert receiver.requests == []


@pytest.mark.parametrize(
    ("status", "body", "headers", "expected"),
    [
        (400, "invalid_blocks", {}, "HTTP 400: invalid_blocks"),
        (404, "no_service", {}, "HTTP 404: no_service"),
        (429, "rate_limited", {"Retry-After": "30"}, "HTTP 429: rate_limited (retry after 30 s)"),
    ],
)
async def test_slack_error_replies(
    status: int, body: str, headers: dict[str, str], expected: str
) -> None:
    with StatusServer(status, body, headers) as server:
        with pytest.raises(DeliveryError) as info:
            await _send(server.url, payload())
    assert expected in str(info.value) and "/hook" not in str(info.value)


async def test_unreachable_is_a_delivery_error() -> None:
    with pytest.raises(DeliveryError, match="ConnectError"):
        await _send(f"http://127.0.0.1:{free_port()}/hook", payload())
