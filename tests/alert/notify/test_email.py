"""E-mail: a real SMTP server (aiosmtpd) on loopback receives the multipart alert."""

from __future__ import annotations

import base64
import email
import logging
from collections.abc import Iterator
from email import policy
from email.message import EmailMessage
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from services.alert.notify.base import DeliveryError
from services.alert.notify.email import EmailNotifier
from shared.ports import free_port
from tests.alert.notify.samples import CASE_URL, POST_URL, payload

PASSWORD = "hunter2-very-secret"


class Inbox:
    """aiosmtpd handler that keeps every accepted message."""

    def __init__(self) -> None:
        self.envelopes: list[Envelope] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.envelopes.append(envelope)
        return "250 OK"

    def message(self, i: int = 0) -> EmailMessage:
        raw = self.envelopes[i].original_content or self.envelopes[i].content
        assert isinstance(raw, bytes)
        return email.message_from_bytes(raw, policy=policy.default)  # type: ignore[return-value]


def _authenticate(
    server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
) -> AuthResult:
    ok = isinstance(data, LoginPassword) and data == (b"alerts", PASSWORD.encode())
    return AuthResult(success=ok, handled=False)  # let aiosmtpd answer 535 on failure


@pytest.fixture
def smtp() -> Iterator[tuple[Controller, Inbox]]:
    inbox = Inbox()
    controller = Controller(
        inbox,
        hostname="127.0.0.1",
        port=free_port(),
        authenticator=_authenticate,
        auth_require_tls=False,  # loopback test server only
    )
    controller.start()
    yield controller, inbox
    controller.stop()


def _notifier(port: int, **kwargs: Any) -> EmailNotifier:
    return EmailNotifier(
        "127.0.0.1", port, "alerts@thirdring.example", ["care@acme.example", "lead@acme.example"],
        timeout=3.0, **kwargs,
    )  # fmt: skip


async def test_alert_mail_has_both_parts_and_stable_ids(smtp: tuple[Controller, Inbox]) -> None:
    controller, inbox = smtp
    text = "<script>alert('x')</script> & my order never arrived " + "y" * 100
    p = payload("breach", links={"case": CASE_URL}, post={"text": text})
    await _notifier(controller.port).send("1234", p)

    [env] = inbox.envelopes
    assert env.mail_from == "alerts@thirdring.example"
    assert env.rcpt_tos == ["care@acme.example", "lead@acme.example"]
    msg = inbox.message()
    assert msg["Subject"] == f"[thirdring] BREACH P1 acme: {text[:59]}…"
    assert msg["To"] == "care@acme.example, lead@acme.example"
    assert msg["Message-ID"] == "<thirdring-1234@thirdring.local>"
    assert msg["X-Thirdring-Delivery"] == "1234"
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg.get_content_type() == "multipart/alternative"

    plain = msg.get_body(("plain",))
    html = msg.get_body(("html",))
    assert plain is not None and html is not None
    plain_text, html_text = plain.get_content(), html.get_content()
    assert "🚨 Breach: P1 case for acme, target missed 2 min ago" in plain_text
    assert f"> {text}" in plain_text and f"Open case: {CASE_URL}" in plain_text
    assert "Complaint score: 0.91" in plain_text
    assert "<script>" not in html_text
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; my order" in html_text
    assert f'<a href="{POST_URL}">Open post</a>' in html_text
    assert '<th align="left" style="padding-right:12px">Urgency score</th><td>0.87</td>' in (
        html_text
    )


async def test_resend_keeps_the_message_id(smtp: tuple[Controller, Inbox]) -> None:
    controller, inbox = smtp
    notifier = _notifier(controller.port)
    for stage in ("warning", "warning"):
        await notifier.send("77", payload(stage, fraction=0.8))
    first, second = inbox.message(0), inbox.message(1)
    assert first["Message-ID"] == second["Message-ID"] == "<thirdring-77@thirdring.local>"
    # str().strip(): CPython folds this subject onto a continuation line and keeps the space.
    assert (
        str(first["Subject"])
        .strip()
        .startswith("[thirdring] WARNING P1 acme: my order never arrived and")
    )


async def test_login_and_wrong_password_never_leaks(
    smtp: tuple[Controller, Inbox], caplog: pytest.LogCaptureFixture
) -> None:
    controller, inbox = smtp
    caplog.set_level(logging.DEBUG)
    await _notifier(controller.port, username="alerts", password=PASSWORD).send("1", payload())
    assert len(inbox.envelopes) == 1

    wrong = _notifier(controller.port, username="alerts", password=PASSWORD + "x")
    with pytest.raises(DeliveryError, match="SMTPAuthenticationError") as info:
        await wrong.send("2", payload())
    assert len(inbox.envelopes) == 1
    assert PASSWORD not in str(info.value) and PASSWORD not in repr(wrong)
    plain_auth = base64.b64encode(f"\0alerts\0{PASSWORD}".encode()).decode()
    assert PASSWORD not in caplog.text and plain_auth not in caplog.text


async def test_closed_port_is_a_delivery_error() -> None:
    port = free_port()
    with pytest.raises(DeliveryError, match=f"127.0.0.1:{port}"):
        await _notifier(port).send("1", payload())


async def test_escalation_recipients_are_added_and_nobody_is_an_error() -> None:
    notifier = EmailNotifier("127.0.0.1", 25, "a@b.example", [])
    lead = {"escalation": {"recipients": [{"handle": "bo", "email": "bo@example.com"}]}}
    assert notifier.recipients_for({**payload(), **lead}) == ["bo@example.com"]
    with pytest.raises(DeliveryError, match="nobody to send to"):
        await notifier.send("1", payload())


def test_bad_configuration_is_refused_early() -> None:
    with pytest.raises(ValueError, match="starttls"):
        EmailNotifier("127.0.0.1", 25, "a@b.example", ["c@d.example"], starttls=True, use_tls=True)
