"""A real HTTP server on 127.0.0.1 that answers like Reddit's JSON API (fixtures/reddit).

Listings (``/r/{sub}/new``, ``/r/{sub}/comments``, ``/search?q=&sort=new``,
``/user/{name}/comments``; with ``.json`` as on www.reddit.com, without as on
oauth.reddit.com): newest first, ``limit`` (default 25, max 100), ``after`` (the fullname
to go on below; one that is not in the listing gives an empty page, as on Reddit).
``/api/v1/access_token`` gives application-only tokens for the client credentials in
``clients`` (HTTP basic auth); the paths without ``.json`` need one, and ``revoke()``
makes the tokens given so far answer 401. Every answer carries Reddit's
``X-Ratelimit-Used/Remaining/Reset`` headers.
"""

from __future__ import annotations

import base64
import copy
from dataclasses import dataclass, field
from typing import Any

from tests.ingest.fixture_server import Answer, FixtureServer, Request, load_fixture

TOKEN = "/api/v1/access_token"
FIXTURES = (
    "r_AcmeBroadband_new.json",
    "r_AcmeBroadband_comments.json",
    "search_acme_broadband.json",
    "user_acme_official_comments.json",
)
UNAUTHORIZED = {"message": "Unauthorized", "error": 401}


def _place(thing: dict[str, Any]) -> int:
    return int(thing["data"]["id"], 36)


def _is(thing: dict[str, Any], kind: str, **fields: str) -> bool:
    data = thing["data"]
    return thing["kind"] == kind and all(data[k].lower() == v.lower() for k, v in fields.items())


def _text(thing: dict[str, Any]) -> str:
    return f"{thing['data']['title']} {thing['data']['selftext']}".lower()


@dataclass
class RedditServer(FixtureServer):
    things: dict[str, dict[str, Any]] = field(default_factory=dict)  # fullname -> thing
    clients: dict[str, str] = field(default_factory=dict)  # client id -> secret
    tokens: set[str] = field(default_factory=set)
    revoked: set[str] = field(default_factory=set)
    window: int = 600  # requests per window (10 minutes)

    @classmethod
    def with_fixtures(cls) -> RedditServer:
        server = cls(clients={"acme-app-id": "acme-app-secret"})
        for name in FIXTURES:
            for thing in load_fixture("reddit", name)["data"]["children"]:
                server.things[thing["data"]["name"]] = thing
        return server

    # -- test helpers --

    def add(self, template: dict[str, Any], thing_id: str, created_utc: float) -> None:
        with self._lock:
            thing = copy.deepcopy(template)
            kind = thing["kind"]
            thing["data"].update(id=thing_id, name=f"{kind}_{thing_id}", created_utc=created_utc)
            self.things[f"{kind}_{thing_id}"] = thing

    def revoke(self) -> None:
        with self._lock:
            self.revoked |= self.tokens

    # -- serving --

    def rate_headers(self) -> dict[str, str]:
        used = len(self.requests)
        return {
            "X-Ratelimit-Used": str(used),
            "X-Ratelimit-Remaining": f"{self.window - used:.1f}",
            "X-Ratelimit-Reset": "412",
        }

    def answer(self, request: Request) -> Answer:
        rate = self.rate_headers()
        if request.path == TOKEN:
            return self._token(request, rate)
        path = request.path.removesuffix(".json")
        if path == request.path:  # oauth.reddit.com: a bearer token
            token = request.headers.get("authorization", "").removeprefix("bearer ")
            if token not in self.tokens or token in self.revoked:
                return 401, rate, UNAUTHORIZED
        parts = path.strip("/").split("/")
        things = list(self.things.values())
        if len(parts) == 3 and parts[0] == "r" and parts[2] in ("new", "comments"):
            kind = "t3" if parts[2] == "new" else "t1"
            hits = [t for t in things if _is(t, kind, subreddit=parts[1])]
        elif parts == ["search"]:
            q = (request.arg("q") or "").lower()
            hits = [t for t in things if _is(t, "t3") and q in _text(t)]
        elif len(parts) == 3 and parts[0] == "user" and parts[2] == "comments":
            hits = [t for t in things if _is(t, "t1", author=parts[1])]
        else:
            return 404, rate, {"message": "Not Found", "error": 404}
        return 200, rate, self._listing(request, sorted(hits, key=_place, reverse=True))

    def _token(self, request: Request, rate: dict[str, str]) -> Answer:
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        client_id, _, secret = base64.b64decode(credentials or "").decode().partition(":")
        if scheme != "Basic" or self.clients.get(client_id) != secret:
            return 401, rate, UNAUTHORIZED
        if request.form().get("grant_type") != "client_credentials":
            return 400, rate, {"error": "unsupported_grant_type"}
        token = f"app-token-{len(self.tokens) + 1}"
        self.tokens.add(token)
        return (
            200,
            rate,
            {
                "access_token": token,
                "token_type": "bearer",
                "expires_in": 86400,
                "scope": "*",
            },
        )

    @staticmethod
    def _listing(request: Request, hits: list[dict[str, Any]]) -> dict[str, Any]:
        limit = min(int(request.arg("limit", "25") or 25), 100)
        start = 0
        if after := request.arg("after"):
            names = [t["data"]["name"] for t in hits]
            start = names.index(after) + 1 if after in names else len(hits)
        page = hits[start : start + limit]
        more = start + limit < len(hits)
        return {
            "kind": "Listing",
            "data": {
                "after": page[-1]["data"]["name"] if page and more else None,
                "dist": len(page),
                "modhash": "",
                "geo_filter": None,
                "children": page,
                "before": page[0]["data"]["name"] if page and after else None,
            },
        }
