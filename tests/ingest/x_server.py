"""A real HTTP server on 127.0.0.1 answering like the X API v2 (see fixtures/x).

The documented behaviours the connector depends on: a bearer token on every call (401
without), ``GET /2/tweets/search/recent`` (``max_results`` 10–100, ``next_token``),
``GET /2/users/:id/mentions`` (``max_results`` 5–100, ``pagination_token``) and
``GET /2/users/by/username/:username``; posts newest first, ``since_id`` (exclusive),
``includes.users`` for the authors of the page, ``meta`` with ``newest_id``/``oldest_id``/
``result_count``/``next_token`` (just ``{"result_count": 0}`` when nothing matches); and
``x-rate-limit-limit``/``-remaining``/``-reset`` (epoch seconds) on every answer. The
search query is recorded, not evaluated: every post of ``search`` matches it.
"""

from __future__ import annotations

import base64
import copy
import time
from dataclasses import dataclass, field
from typing import Any

from tests.ingest.fixture_server import Answer, FixtureServer, Request, load_fixture

RATE_LIMIT = 450  # requests per 15 minutes (app auth), as documented for both endpoints


def _key(post_id: str) -> tuple[int, str]:
    return (len(post_id), post_id)


def _token(post_id: str) -> str:
    return base64.b32encode(post_id.encode()).decode().rstrip("=").lower()


def _untoken(token: str) -> str:
    return base64.b32decode(token.upper() + "=" * (-len(token) % 8)).decode()


def _invalid(name: str, value: str, low: int, high: int) -> Answer:
    return (
        400,
        {},
        {
            "errors": [
                {
                    "parameters": {name: [value]},
                    "message": f"The `{name}` query parameter value [{value}] is not between "
                    f"{low} and {high}",
                }
            ],
            "title": "Invalid Request",
            "detail": "One or more parameters to your request was invalid.",
            "type": "https://api.twitter.com/2/problems/invalid-request",
        },
    )


@dataclass
class XServer(FixtureServer):
    token: str = "x-bearer"
    search: list[dict[str, Any]] = field(default_factory=list)
    mentions: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # user id -> posts
    users: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> user
    # x-rate-limit-remaining of the next answers (None: counts down from RATE_LIMIT)
    remaining: int | None = None
    reset_in: int = 900
    _calls: int = 0

    @classmethod
    def with_fixtures(cls) -> XServer:
        search = load_fixture("x", "search_recent.json")
        mentions = load_fixture("x", "mentions.json")
        users = {u["id"]: u for d in (search, mentions) for u in d["includes"]["users"]}
        brand = next(u for u in users.values() if u["username"] == "acme")
        return cls(search=search["data"], mentions={brand["id"]: mentions["data"]}, users=users)

    def add_post(self, template: dict[str, Any], post_id: str, **changes: Any) -> None:
        with self._lock:
            post = copy.deepcopy(template)
            post.update(id=post_id, conversation_id=post_id, edit_history_tweet_ids=[post_id])
            post.update(changes)
            self.search.append(post)

    def rate_headers(self) -> dict[str, str]:
        self._calls += 1
        left = self.remaining if self.remaining is not None else RATE_LIMIT - self._calls
        return {
            "x-rate-limit-limit": str(RATE_LIMIT),
            "x-rate-limit-remaining": str(max(0, left)),
            "x-rate-limit-reset": str(int(time.time()) + self.reset_in),
        }

    def answer(self, request: Request) -> Answer:
        rate = self.rate_headers()
        if request.headers.get("authorization") != f"Bearer {self.token}":
            body = {"title": "Unauthorized", "type": "about:blank", "status": 401}
            return 401, rate, {**body, "detail": "Unauthorized"}
        path = request.path
        if path.startswith("/2/users/by/username/"):
            name = path.rsplit("/", 1)[1].lower()
            for u in self.users.values():
                if u["username"].lower() == name:
                    return 200, rate, {"data": {k: u[k] for k in ("id", "name", "username")}}
            detail = f"Could not find user with username: [{name}]."
            return 200, rate, {"errors": [{"title": "Not Found Error", "detail": detail}]}
        if path == "/2/tweets/search/recent":
            if not request.arg("query"):
                return _invalid("query", "", 1, 512)
            return self._page(request, self.search, "next_token", 10, rate)
        if path.startswith("/2/users/") and path.endswith("/mentions"):
            posts = self.mentions.get(path.split("/")[3], [])
            return self._page(request, posts, "pagination_token", 5, rate)
        return 404, rate, {"title": "Not Found Error", "detail": f"no route {path}"}

    def _page(
        self, request: Request, posts: list[dict[str, Any]], token_name: str, low: int, rate: dict
    ) -> Answer:
        value = request.arg("max_results", "10") or "10"
        if not low <= int(value) <= 100:
            return _invalid("max_results", value, low, 100)
        sel = sorted(posts, key=lambda p: _key(p["id"]), reverse=True)
        if request.arg("since_id"):
            sel = [p for p in sel if _key(p["id"]) > _key(request.arg("since_id") or "")]
        token = request.arg(token_name)
        if token:
            below = _untoken(token)
            sel = [p for p in sel if _key(p["id"]) < _key(below)]
        page, rest = sel[: int(value)], sel[int(value) :]
        if not page:
            return 200, rate, {"meta": {"result_count": 0}}
        authors = {p.get("author_id") for p in page}
        meta: dict[str, Any] = {
            "newest_id": page[0]["id"],
            "oldest_id": page[-1]["id"],
            "result_count": len(page),
        }
        if rest:
            meta["next_token"] = _token(page[-1]["id"])
        body = {
            "data": page,
            "includes": {"users": [u for uid, u in self.users.items() if uid in authors]},
            "meta": meta,
        }
        return 200, rate, body
