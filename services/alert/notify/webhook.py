"""Generic JSON webhook, signed with HMAC-SHA256 so the receiver can trust it."""

from __future__ import annotations

import json
from typing import Any

import httpx

from services.alert.notify.base import DeliveryError, Notifier
from shared.signing import SIGNATURE_HEADER, sign


class WebhookNotifier(Notifier):
    channel = "webhook"

    def __init__(self, url: str, secret: str | None, timeout: float = 10.0) -> None:
        self.url = url
        self._secret = secret
        self._client = httpx.AsyncClient(timeout=timeout)

    async def send(self, message_id: str, payload: dict[str, Any]) -> None:
        body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "thirdring-alert/0.1",
            # Receivers dedupe on this: a crash after delivery but before our commit resends.
            "X-Thirdring-Delivery": message_id,
        }
        if self._secret:
            headers[SIGNATURE_HEADER] = sign(body, self._secret)
        try:
            resp = await self._client.post(self.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise DeliveryError(f"{type(exc).__name__}: {exc}") from exc
        if resp.status_code >= 300:
            raise DeliveryError(f"HTTP {resp.status_code}: {resp.text[:200]}")

    async def close(self) -> None:
        await self._client.aclose()
