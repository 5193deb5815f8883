"""A real HTTP server on 127.0.0.1 that answers like the Bluesky AppView (fixtures/bluesky).

``app.bsky.feed.searchPosts``: ``q`` (text, case-insensitive), ``mentions`` (rich-text
mention facets), ``lang``, ``since`` (inclusive) and ``until`` (exclusive) on ``sortAt``,
newest first, ``limit`` (default 25, max 100) and an offset ``cursor``.
``app.bsky.feed.getAuthorFeed``: the actor's posts and reposts, newest first, with a
cursor. ``com.atproto.server.createSession`` opens a session for an app password; with
``require_auth`` search answers 403 ``AuthMissing`` without one, and ``expire_tokens()``
makes the tokens given so far answer 400 ``ExpiredToken``. Every answer carries the
``RateLimit-*`` headers.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tests.ingest.fixture_server import Answer, FixtureServer, Request, load_fixture

SEARCH = "/xrpc/app.bsky.feed.searchPosts"
AUTHOR_FEED = "/xrpc/app.bsky.feed.getAuthorFeed"
SESSION = "/xrpc/com.atproto.server.createSession"


def sort_at(post: dict[str, Any]) -> datetime:
    times = []
    for value in (post["indexedAt"], post["record"]["createdAt"]):
        try:
            times.append(datetime.fromisoformat(value))
        except ValueError:
            pass
    return min(times)


def _time(value: str) -> datetime:
    when = datetime.fromisoformat(value)
    return when if when.tzinfo else when.replace(tzinfo=UTC)


@dataclass
class BlueskyServer(FixtureServer):
    posts: dict[str, dict[str, Any]] = field(default_factory=dict)  # uri -> PostView
    reposts: list[dict[str, Any]] = field(default_factory=list)  # FeedViewPost with a reason
    # handle -> app password; tokens given (valid ones and expired ones)
    accounts: dict[str, str] = field(default_factory=dict)
    require_auth: bool = False
    tokens: set[str] = field(default_factory=set)
    expired: set[str] = field(default_factory=set)

    @classmethod
    def with_fixtures(cls) -> BlueskyServer:
        server = cls(accounts={"acme.bsky.social": "app-pass-1234"})
        for p in load_fixture("bluesky", "search_posts.json")["posts"]:
            server.posts[p["uri"]] = p
        for entry in load_fixture("bluesky", "author_feed.json")["feed"]:
            if entry.get("reason"):
                server.reposts.append(entry)
            server.posts.setdefault(entry["post"]["uri"], entry["post"])
        return server

    # -- test helpers --

    def add_post(self, template: dict[str, Any], rkey: str, created_at: str) -> dict[str, Any]:
        with self._lock:
            p = copy.deepcopy(template)
            p["uri"] = template["uri"].rsplit("/", 1)[0] + f"/{rkey}"
            p["record"]["createdAt"] = p["indexedAt"] = created_at
            self.posts[p["uri"]] = p
            return p

    def expire_tokens(self) -> None:
        with self._lock:
            self.expired |= self.tokens

    # -- serving --

    def rate_headers(self) -> dict[str, str]:
        return {
            "RateLimit-Limit": "3000",
            "RateLimit-Remaining": str(3000 - len(self.requests)),
            "RateLimit-Reset": str(int(time.time()) + 300),
            "RateLimit-Policy": "3000;w=300",
        }

    def answer(self, request: Request) -> Answer:
        rate = self.rate_headers()
        if request.path == SESSION:
            body = request.json()
            if self.accounts.get(body.get("identifier")) != body.get("password"):
                return 401, rate, {"error": "AuthenticationRequired", "message": "Invalid"}
            token = f"jwt-{len(self.tokens) + 1}"
            self.tokens.add(token)
            did = next(
                p["author"]["did"]
                for p in self.posts.values()
                if p["author"]["handle"] == body["identifier"]
            )
            session = {"accessJwt": token, "refreshJwt": f"refresh-{token}", "did": did}
            return 200, rate, {**session, "handle": body["identifier"], "active": True}
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        if token in self.expired:
            return 400, rate, {"error": "ExpiredToken", "message": "Token has expired"}
        if self.require_auth and token not in self.tokens:
            return 403, rate, {"error": "AuthMissing", "message": "Authentication Required"}
        if request.path == SEARCH:
            return self._search(request, rate)
        if request.path == AUTHOR_FEED:
            actor = request.arg("actor", "")
            feed = [{"post": p} for p in self.posts.values() if p["author"]["handle"] == actor]
            feed += [r for r in self.reposts if r["reason"]["by"]["handle"] == actor]
            feed.sort(key=lambda e: e.get("reason", {}).get("indexedAt") or e["post"]["indexedAt"])
            status, body = self._page(request, feed[::-1])
            return status, rate, {"feed": body.pop("items"), **body}
        return 404, rate, {"error": "MethodNotImplemented", "message": "Method Not Implemented"}

    def _search(self, request: Request, rate: dict[str, str]) -> Answer:
        if not request.arg("q"):
            return 400, rate, {"error": "InvalidRequest", "message": 'Params must have "q"'}
        q = request.arg("q", "").lower()
        hits = [p for p in self.posts.values() if q in p["record"]["text"].lower()]
        if mentions := request.arg("mentions"):
            dids = {
                p["author"]["did"] for p in self.posts.values() if p["author"]["handle"] == mentions
            }
            hits = [p for p in hits if dids & self._mentioned(p)]
        if lang := request.arg("lang"):
            hits = [p for p in hits if lang in p["record"].get("langs", [])]
        if since := request.arg("since"):
            hits = [p for p in hits if sort_at(p) >= _time(since)]
        if until := request.arg("until"):
            hits = [p for p in hits if sort_at(p) < _time(until)]
        hits.sort(key=sort_at, reverse=True)
        status, body = self._page(request, hits)
        return status, rate, {"posts": body.pop("items"), "hitsTotal": len(hits), **body}

    @staticmethod
    def _mentioned(post: dict[str, Any]) -> set[str]:
        return {
            f["did"]
            for facet in post["record"].get("facets", [])
            for f in facet["features"]
            if f["$type"] == "app.bsky.richtext.facet#mention"
        }

    @staticmethod
    def _page(request: Request, items: list[Any]) -> tuple[int, dict[str, Any]]:
        limit = min(int(request.arg("limit", "25") or 25), 100)
        offset = int(request.arg("cursor", "0") or 0)
        body: dict[str, Any] = {"items": items[offset : offset + limit]}
        if offset + limit < len(items):
            body["cursor"] = str(offset + limit)
        return 200, body
