"""A real HTTP server on 127.0.0.1 that answers like a Mastodon server (see fixtures/mastodon).

It serves the documented shapes and behaviours the connector depends on: newest first,
``limit``/``max_id``/``since_id``/``min_id``, the ``Link`` header, ``X-RateLimit-*``, a
bearer token for notifications and search, lookups and thread contexts. ``fail`` queues
error answers (a 429 with Retry-After, a 500) for a path prefix; ``down`` makes every
request fail with 500.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from tests.ingest.fixture_server import FixtureServer, Request, load_fixture


def _key(value: str) -> tuple[int, str]:
    return (len(value), value)


@dataclass
class MastodonServer(FixtureServer):
    token: str | None = None
    statuses: dict[str, dict[str, Any]] = field(default_factory=dict)
    notifications: list[dict[str, Any]] = field(default_factory=list)
    accounts: list[dict[str, Any]] = field(default_factory=list)
    # statuses that exist (for /context) but are in no timeline
    hidden: set[str] = field(default_factory=set)
    _calls: int = 0

    @classmethod
    def with_fixtures(cls, token: str | None = None) -> MastodonServer:
        doc = load_fixture("mastodon", "statuses.json")
        server = cls(token=token, accounts=doc["accounts"])
        for s in doc["statuses"]:
            server.statuses[s["id"]] = s
        server.notifications = load_fixture("mastodon", "notifications.json")["notifications"]
        return server

    # -- test helpers --

    def add_status(self, template: dict[str, Any], status_id: str, **changes: Any) -> dict:
        with self._lock:
            s = copy.deepcopy(template)
            s.update(id=status_id, url=f"https://fosstodon.example/@x/{status_id}", **changes)
            self.statuses[status_id] = s
            return s

    def rate_headers(self) -> dict[str, str]:
        self._calls += 1
        reset = (datetime.now(UTC) + timedelta(minutes=5)).isoformat().replace("+00:00", "Z")
        return {
            "X-RateLimit-Limit": "300",
            "X-RateLimit-Remaining": str(max(0, 300 - self._calls)),
            "X-RateLimit-Reset": reset,
        }

    def answer(self, request: Request) -> tuple[int, dict[str, str], Any]:
        path, query, headers = request.path, request.query, request.headers
        rate = self.rate_headers()
        authed = self.token is not None and headers.get("authorization") == f"Bearer {self.token}"
        visible = [s for sid, s in self.statuses.items() if sid not in self.hidden]

        if path.startswith("/api/v1/timelines/tag/"):
            tag = path.rsplit("/", 1)[1].lower()
            items = [s for s in visible if any(t["name"].lower() == tag for t in s.get("tags", []))]
            return self._page(path, query, items, rate)
        if path == "/api/v1/accounts/lookup":
            acct = query.get("acct", [""])[0].lstrip("@").lower()
            for a in self.accounts:
                if a["acct"].lower() == acct:
                    return 200, rate, a
            return 404, rate, {"error": "Record not found"}
        if path.startswith("/api/v1/accounts/") and path.endswith("/statuses"):
            account_id = path.split("/")[4]
            items = [s for s in visible if s["account"]["id"] == account_id]
            return self._page(path, query, items, rate)
        if path == "/api/v1/notifications":
            if not authed:
                return 401, rate, {"error": "The access token is invalid"}
            types = query.get("types[]")
            items = [n for n in self.notifications if not types or n["type"] in types]
            return self._page(path, query, items, rate)
        if path == "/api/v2/search":
            if not authed:
                return 200, rate, {"accounts": [], "statuses": [], "hashtags": []}
            q = query.get("q", [""])[0].lower()
            items = [s for s in visible if q in s["content"].lower()]
            status, extra, body = self._page(path, query, items, rate)
            extra.pop("Link", None)  # search pages by offset/ids, without a Link header
            return status, extra, {"accounts": [], "statuses": body, "hashtags": []}
        if path.startswith("/api/v1/statuses/") and path.endswith("/context"):
            sid = path.split("/")[4]
            if sid not in self.statuses:
                return 404, rate, {"error": "Record not found"}
            ancestors = []
            parent = self.statuses[sid].get("in_reply_to_id")
            while parent and parent in self.statuses:
                ancestors.insert(0, self.statuses[parent])
                parent = self.statuses[parent].get("in_reply_to_id")
            return 200, rate, {"ancestors": ancestors, "descendants": []}
        return 404, rate, {"error": "Record not found"}

    def _page(
        self, path: str, query: dict[str, list[str]], items: list[dict[str, Any]], rate: dict
    ) -> tuple[int, dict[str, str], Any]:
        limit = min(int(query.get("limit", ["20"])[0]), 40)
        sel = sorted(items, key=lambda x: _key(x["id"]), reverse=True)
        if "max_id" in query:
            sel = [x for x in sel if _key(x["id"]) < _key(query["max_id"][0])]
        if "since_id" in query:
            sel = [x for x in sel if _key(x["id"]) > _key(query["since_id"][0])]
        if "min_id" in query:
            sel = [x for x in sel if _key(x["id"]) > _key(query["min_id"][0])][-limit:]
        else:
            sel = sel[:limit]
        headers = dict(rate)
        if sel:
            keep = [
                (k, v)
                for k, vs in query.items()
                for v in vs
                if k not in ("max_id", "min_id", "since_id")
            ]
            base = f"{self.url}{path}?"
            older = urlencode([*keep, ("max_id", sel[-1]["id"])])
            newer = urlencode([*keep, ("min_id", sel[0]["id"])])
            headers["Link"] = f'<{base}{older}>; rel="next", <{base}{newer}>; rel="prev"'
        return 200, headers, sel
