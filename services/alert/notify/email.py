"""E-mail over SMTP: for teams that live in a shared mailbox or a ticketing inbox."""

from __future__ import annotations

import html
import logging
import re
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any

import aiosmtplib

from services.alert.notify import render
from services.alert.notify.base import DeliveryError, Notifier

log = logging.getLogger("thirdring.alerts.email")

MESSAGE_ID_DOMAIN = "thirdring.local"
SUBJECT_POST_CHARS = 60


def message_id_header(message_id: str) -> str:
    """Stable per outbox message, so a resend after a crash threads with (and is recognisable
    as) the first copy."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "-", message_id) or "unknown"
    return f"<thirdring-{safe}@{MESSAGE_ID_DOMAIN}>"


def subject(payload: dict[str, Any]) -> str:
    case = payload.get("case") or {}
    stage = render.one_line(str(payload.get("stage") or "alert")).upper()
    text = render.truncate(render.one_line(render.post_text(payload)), SUBJECT_POST_CHARS)
    head = f"[thirdring] {stage} {case.get('priority') or 'P?'} {case.get('brand') or '?'}"
    return render.one_line(f"{head}: {text}" if text else head)


def plain_body(payload: dict[str, Any]) -> str:
    lines = [render.title(payload), ""]
    lines += [f"> {line}" for line in (render.post_text(payload) or "(no text)").splitlines()]
    lines.append("")
    lines += [f"{k}: {v}" for k, v in render.facts(payload)]
    reasons = render.reasons(payload)
    lines.append(f"Reasons: {', '.join(reasons) if reasons else 'none recorded'}")
    lines.append(f"Ref: {render.case_ref(payload)}")
    links = render.links(payload)
    if links:
        lines.append("")
        lines += [f"{label}: {url}" for label, url in links]
    return "\n".join(lines) + "\n"


def html_body(payload: dict[str, Any]) -> str:
    """Every value goes through html.escape: post text is customer-written and untrusted."""
    e = html.escape
    text = e(render.post_text(payload) or "(no text)").replace("\n", "<br>\n")
    rows = "\n".join(
        f'<tr><th align="left" style="padding-right:12px">{e(k)}</th><td>{e(v)}</td></tr>'
        for k, v in render.facts(payload)
    )
    reasons = render.reasons(payload)
    links = " | ".join(
        f'<a href="{e(url, quote=True)}">{e(label)}</a>' for label, url in render.links(payload)
    )
    return (
        "<!DOCTYPE html>\n<html><body>\n"
        f"<h2>{e(render.title(payload))}</h2>\n"
        '<blockquote style="border-left:3px solid #ccc;margin:0;padding-left:12px">'
        f"{text}</blockquote>\n"
        f"<table>\n{rows}\n</table>\n"
        f"<p><b>Reasons:</b> {e(', '.join(reasons)) if reasons else 'none recorded'}<br>\n"
        f"<small>{e(render.case_ref(payload))}</small></p>\n"
        + (f"<p>{links}</p>\n" if links else "")
        + "</body></html>\n"
    )


def build_message(
    message_id: str, payload: dict[str, Any], sender: str, recipients: list[str]
) -> EmailMessage:
    msg = EmailMessage()
    msg["Subject"] = subject(payload)
    msg["From"] = sender
    msg["To"] = ", ".join(recipients)
    msg["Date"] = format_datetime(datetime.now(UTC))
    msg["Message-ID"] = message_id_header(message_id)
    msg["X-Thirdring-Delivery"] = message_id
    # RFC 3834: keeps out-of-office replies and ticket auto-acks away from the sender.
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(plain_body(payload))
    msg.add_alternative(html_body(payload), subtype="html")
    return msg


class EmailNotifier(Notifier):
    """One message to all recipients per alert. The password is kept private and is never
    part of a log line, an error or repr."""

    channel = "email"

    def __init__(
        self,
        host: str,
        port: int,
        sender: str,
        recipients: list[str],
        *,
        username: str | None = None,
        password: str | None = None,
        starttls: bool = False,
        use_tls: bool = False,
        timeout: float = 10.0,
    ) -> None:
        if starttls and use_tls:
            raise ValueError("choose starttls (upgrade on 587) or use_tls (implicit, 465)")
        self.host = host
        self.port = port
        self.sender = sender
        self.recipients = list(recipients)
        self._username = username
        self._password = password
        self._starttls = starttls
        self._use_tls = use_tls
        self._timeout = timeout

    def __repr__(self) -> str:
        return (
            f"EmailNotifier(host={self.host!r}, port={self.port}, sender={self.sender!r}, "
            f"recipients={self.recipients!r}, username={self._username!r})"
        )

    def recipients_for(self, payload: dict[str, Any]) -> list[str]:
        """The configured addresses, plus the people an escalation step names (lead, manager)."""
        named = [r["email"] for r in (payload.get("escalation") or {}).get("recipients", [])]
        return list(dict.fromkeys([*self.recipients, *(e for e in named if e)]))

    async def send(self, message_id: str, payload: dict[str, Any]) -> None:
        recipients = self.recipients_for(payload)
        if not recipients:
            raise DeliveryError("email: nobody to send to (no recipients configured or named)")
        msg = build_message(message_id, payload, self.sender, recipients)
        try:
            refused, _ = await aiosmtplib.send(
                msg,
                sender=self.sender,
                recipients=recipients,
                hostname=self.host,
                port=self.port,
                username=self._username,
                password=self._password,
                # False means "never": aiosmtplib's default (None) would upgrade whenever
                # offered and fail on servers with certificates we cannot verify.
                start_tls=self._starttls,
                use_tls=self._use_tls,
                timeout=self._timeout,
            )
        except (aiosmtplib.SMTPException, OSError) as exc:
            # aiosmtplib's messages carry server replies, never the credentials we sent.
            raise DeliveryError(
                f"email via {self.host}:{self.port}: {type(exc).__name__}: {exc}"
            ) from exc
        if refused:
            # Some recipients took it: a retry would duplicate it for them, so only log.
            log.warning(
                "alert %s not accepted for %s",
                message_id,
                ", ".join(f"{rcpt} ({resp.code} {resp.message})" for rcpt, resp in refused.items()),
            )
