"""Alert payloads as ``alert_payload`` builds them, plus the optional keys later stages add."""

from __future__ import annotations

import threading
from copy import deepcopy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

POST_URL = "https://social.example/acme/status/1"
CASE_URL = "https://care.example/cases/12"

BASE: dict[str, Any] = {
    "schema": "thirdring.alert/v1",
    "stage": "breach",
    "fired_at": "2026-11-02T09:12:00+00:00",
    "case": {
        "id": 12,
        "conversation_id": "c1",
        "brand": "acme",
        "source": "twitter",
        "priority": "P1",
        "cycle": 1,
        "started_at": "2026-11-02T09:00:00+00:00",
        "due_at": "2026-11-02T09:10:00+00:00",
        "target_seconds": 600,
        "time_left_seconds": -120.0,
    },
    "post": {
        "event_id": "ev-1",
        "text": "my order never arrived\nand nobody answers",
        "author_id": "u1",
        "url": POST_URL,
        "lang": "en",
        "sentiment": "negative",
        "complaint_score": 0.91,
        "urgency_score": 0.87,
        "reasons": ["intent:refund", "keyword:never arrived"],
    },
}


def payload(stage: str = "breach", **extra: Any) -> dict[str, Any]:
    """A payload for ``stage``; ``case=``/``post=`` dicts are merged into the defaults."""
    p = deepcopy(BASE)
    p["stage"] = stage
    if stage == "warning":
        p["case"]["time_left_seconds"] = 250.0
    for key in ("case", "post"):
        p[key].update(extra.pop(key, {}))
    p.update(extra)
    return p


class StatusServer:
    """Answers every POST with a fixed status, body and headers (Slack/Teams error replies)."""

    def __init__(self, status: int, body: str = "", headers: dict[str, str] | None = None) -> None:
        reply = (status, body.encode(), headers or {})

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                self.send_response(reply[0])
                for k, v in reply[2].items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(reply[1])))
                self.end_headers()
                self.wfile.write(reply[1])

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        host, port = self._server.server_address[:2]
        self.url = f"http://{host}:{port}/hook"

    def __enter__(self) -> StatusServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
