"""The log channel: every alert as one readable line (always on)."""

from __future__ import annotations

import logging
from typing import Any

from services.alert.notify.base import Notifier

log = logging.getLogger("thirdring.alerts")


class LogNotifier(Notifier):
    channel = "log"

    async def send(self, message_id: str, payload: dict[str, Any]) -> None:
        case, post = payload["case"], payload["post"]
        left = case.get("time_left_seconds")
        when = f"{left:.0f}s left" if left is not None and left >= 0 else "target missed"
        log.warning(
            "ALERT %s case=%s %s %s/%s (%s): %s",
            payload["stage"].upper(),
            case["id"],
            case["priority"],
            case["brand"],
            case["source"],
            when,
            post["text"][:140].replace("\n", " "),
            extra={"case_id": case["id"], "event_id": post["event_id"], "stage": payload["stage"]},
        )
