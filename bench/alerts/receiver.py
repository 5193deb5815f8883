"""A loopback webhook target in its own process (so it does not share the bench's GIL).

Started by the bench as ``python -m bench.alerts.receiver``; prints its port on stdout.
POST: record (receive time, delivery id, case id, stage id) and answer 200 (keep-alive).
GET /records: the records as JSON. POST /reset: forget them.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

records: list[tuple[float, str, int | None, str | None]] = []
lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a real webhook target would

    def _answer(self, status: int, body: bytes = b"") -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        if body:
            self.send_header("Content-Type", "application/json")
        self.end_headers()
        if body:
            self.wfile.write(body)

    def do_POST(self) -> None:
        received = time.time()
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path == "/reset":
            with lock:
                records.clear()
            self._answer(200)
            return
        case_id = stage = None
        try:
            payload = json.loads(body)
            case_id = payload.get("case", {}).get("id")
            stage = payload.get("stage_id")
        except ValueError:
            pass
        with lock:
            records.append((received, self.headers.get("X-Thirdring-Delivery", ""), case_id, stage))
        self._answer(200)

    def do_GET(self) -> None:
        with lock:
            body = json.dumps(records).encode()
        self._answer(200, body)

    def log_message(self, *args: object) -> None:
        pass


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
