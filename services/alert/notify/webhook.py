"""Generic JSON webhook, signed with HMAC-SHA256 so the receiver can trust it."""

from __future__ import annotations

import json
from typing import Any

from services.alert.notify.http import JsonPostNotifier
from shared.signing import SIGNATURE_HEADER, sign


class WebhookNotifier(JsonPostNotifier):
    """POSTs the alert payload as it is (``thirdring.alert/v1``), signed when a secret is set."""

    channel = "webhook"

    def __init__(self, url: str, secret: str | None, timeout: float = 10.0) -> None:
        super().__init__(url, timeout)
        self._secret = secret

    def render(self, payload: dict[str, Any]) -> dict[str, Any]:
        return payload

    def encode(self, body: dict[str, Any]) -> bytes:
        # Compact and sorted: the signed bytes are the same for the same payload.
        return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()

    def signed_headers(self, body: bytes) -> dict[str, str]:
        return {SIGNATURE_HEADER: sign(body, self._secret)} if self._secret else {}
