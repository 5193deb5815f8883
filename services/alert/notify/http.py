"""The common part of the channels that POST JSON to a URL (Slack, Teams, webhook)."""

from __future__ import annotations

import json
from abc import abstractmethod
from typing import Any

import httpx

from services.alert.notify.base import DeliveryError, Notifier


class JsonPostNotifier(Notifier):
    """POSTs one rendered JSON body per alert. The URL is treated as a secret (Slack and Teams
    URLs carry their credentials), so it never appears in errors or repr."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self._url = url
        self._client = httpx.AsyncClient(timeout=timeout)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(url=<redacted>)"

    @abstractmethod
    def render(self, payload: dict[str, Any]) -> dict[str, Any]:
        """The body the target expects, built from the alert payload."""

    def encode(self, body: dict[str, Any]) -> bytes:
        return json.dumps(body, ensure_ascii=False).encode()

    def signed_headers(self, body: bytes) -> dict[str, str]:
        return {}

    async def send(self, message_id: str, payload: dict[str, Any]) -> None:
        body = self.encode(self.render(payload))
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": "thirdring-alert/0.1",
            # Receivers dedupe on this: a crash after delivery but before our commit resends.
            "X-Thirdring-Delivery": message_id,
            **self.signed_headers(body),
        }
        try:
            resp = await self._client.post(self._url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise DeliveryError(f"{self.channel}: {type(exc).__name__}: {exc}") from exc
        # Any 2xx is accepted (Teams Workflows answers 202): retrying one would post twice.
        if not 200 <= resp.status_code < 300:
            detail = f"{self.channel}: HTTP {resp.status_code}: {resp.text[:200]}"
            if retry_after := resp.headers.get("Retry-After"):
                detail += f" (retry after {retry_after} s)"
            raise DeliveryError(detail)

    async def close(self) -> None:
        await self._client.aclose()
