"""Notifier plugins: one class per channel, all delivering the same alert payload."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any


class DeliveryError(Exception):
    """The target refused or could not be reached; the outbox retries with backoff."""


class Notifier(ABC):
    channel: str

    @abstractmethod
    async def send(self, message_id: str, payload: dict[str, Any]) -> None:
        """Deliver one alert. Raise DeliveryError to have it retried later."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        pass
