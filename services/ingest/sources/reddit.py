"""Reddit: new posts and comments in chosen subreddits, keyword search, the brand's replies.

Public JSON listings, anonymously from ``https://www.reddit.com`` (``.json`` paths) or with
application-only OAuth from ``https://oauth.reddit.com``. Documentation followed:

- listings (``{"kind": "Listing", "data": {"after", "before", "children": [thing]}}``,
  ``limit`` ≤ 100, ``after``/``before`` fullnames) and things (``t3`` link, ``t1``
  comment: ``id``, ``name``, ``author``, ``created_utc``, ``permalink``…):
  https://www.reddit.com/dev/api#listings and https://github.com/reddit-archive/reddit/wiki/JSON
- ``GET /r/{sub}/new``, ``GET /r/{sub}/comments``, ``GET /search?q=&sort=new&type=link``,
  ``GET /user/{name}/comments``: https://www.reddit.com/dev/api
- ``raw_json=1`` (text not HTML-escaped): https://www.reddit.com/dev/api#response_body_encoding
- application-only OAuth (``POST /api/v1/access_token``, ``grant_type=client_credentials``,
  HTTP basic auth with the app's id and secret; answers ``{access_token, expires_in}``):
  https://github.com/reddit-archive/reddit/wiki/OAuth2#application-only-oauth
- rules: a unique, descriptive User-Agent ``<platform>:<app ID>:<version> (by /u/<name>)``;
  quota headers ``X-Ratelimit-Used``/``-Remaining``/``-Reset`` (seconds to the end of the
  window): https://github.com/reddit-archive/reddit/wiki/API

Feeds (each with its own cursor):

- ``new:<subreddit>`` and ``comments:<subreddit>`` for each configured subreddit;
- ``search:<keyword>`` for each keyword (posts only: the API does not search comments);
- ``user:<account>`` for each brand account — its comments anywhere: they answer cases.

Cursors: listings answer newest first and page down with ``after``. A feed's cursor is
``{"name": <the newest fullname seen>, "created": <the newest created_utc seen>}``.
Fullnames are base-36 counters, so a poll walks down from the top of the listing, keeps
what comes before the first item at or below ``name`` (by ``created`` when there is no
name), and only then moves the cursor up. Until then the saved cursor also holds ``after``
(where the walk is) and ``newest_name``/``newest``, so a restart, or a poll cut short by
``max_pages_per_poll``, goes on from there: nothing lost, nothing walked twice. Should the
item ``after`` names be gone (deleted: Reddit then answers an empty page), the next poll
walks again from the top. A page repeated after a crash is dropped by the publisher's
dedupe (the external id is the fullname).

Mapping: a post's text is its title and selftext; a comment's, its body. Deleted or
removed items (``[deleted]``/``[removed]``) are not mentions. Threading:
``conversation_id`` is ``reddit:<post fullname>`` (a comment's ``link_id``);
``in_reply_to`` is a comment's ``parent_id``. Reddit has no language field: the brand's
language filter lets every item through.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote

import httpx
from pydantic import Field, field_validator, model_validator

from services.ingest.listening import Brand, SourceSpec
from services.ingest.sources.http import (
    ConnectorConfig,
    HttpSource,
    Page,
    SourceError,
    read_secret,
)
from services.ingest.sources.tokens import fetch_token
from shared.events import RawMention

VERSION = "0.1.0"
PAGE_LIMIT_MAX = 100
WEB = "https://www.reddit.com"
GONE = ("[deleted]", "[removed]")
_SUBREDDIT = re.compile(r"^[A-Za-z0-9_]{2,21}(\+[A-Za-z0-9_]{2,21})*$")


class RedditConfig(ConnectorConfig):
    subreddits: list[str] = Field(default_factory=list)  # without "r/"; "a+b" merges
    comments: bool = True  # also the subreddits' new comments
    keywords: list[str] | None = None  # site-wide search; None = the brand's keywords
    brand_replies: bool = True  # the brand accounts' comments
    limit: int = Field(default=PAGE_LIMIT_MAX, ge=1, le=PAGE_LIMIT_MAX)
    # Reddit throttles generic agents: name the operator's account (``by /u/<contact>``).
    contact: str | None = None
    user_agent: str = ""  # default: server:thirdring:<version> (by /u/<contact>)
    # Application-only OAuth (client credentials): the app's id and secret by env or file.
    client_id_env: str | None = None
    client_id_file: Path | None = None
    client_secret_env: str | None = None
    client_secret_file: Path | None = None
    base_url: str = WEB  # anonymous listings (``.json`` paths)
    oauth_url: str = "https://oauth.reddit.com"  # listings with a token
    token_url: str = f"{WEB}/api/v1/access_token"

    @field_validator("subreddits")
    @classmethod
    def _subreddits(cls, v: list[str]) -> list[str]:
        names = [s.strip().removeprefix("/").removeprefix("r/") for s in v]
        if bad := [s for s in names if not _SUBREDDIT.match(s)]:
            raise ValueError(f"not subreddit names: {bad}")
        return names

    @field_validator("base_url", "oauth_url", "token_url")
    @classmethod
    def _http(cls, v: str) -> str:
        if not re.match(r"^https?://[^/\s]+", v.strip()):
            raise ValueError("must be an http(s) URL")
        return v.strip().rstrip("/")

    @model_validator(mode="after")
    def _agent_and_credentials(self) -> RedditConfig:
        if not self.user_agent:
            name = (self.contact or "").strip().removeprefix("/").removeprefix("u/")
            by = f"by /u/{name}" if name else "social listening for customer care"
            self.user_agent = f"server:thirdring:{VERSION} ({by})"
        has_id = bool(self.client_id_env or self.client_id_file)
        if has_id != bool(self.client_secret_env or self.client_secret_file):
            raise ValueError("OAuth needs both the client id and the client secret")
        return self


def _created(thing: Any) -> float | None:
    data = thing.get("data") if isinstance(thing, dict) else None
    value = data.get("created_utc") if isinstance(data, dict) else None
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _order(name: Any) -> int | None:
    """A fullname's place in time: ids are base-36 counters (``t3_1p0a01``)."""
    try:
        return int(str(name).partition("_")[2], 36) if name else None
    except ValueError:
        return None


def _place(thing: Any) -> int | None:
    data = thing.get("data") if isinstance(thing, dict) else None
    return _order(data.get("name")) if isinstance(data, dict) else None


def _mark(names: list[Any], times: list[Any], things: list[Any]) -> dict[str, Any]:
    """The cursor's fields: the newest fullname and the newest created_utc seen."""
    places = [(k, n) for n in names if (k := _order(n)) is not None]
    places += [(k, t["data"]["name"]) for t in things if (k := _place(t)) is not None]
    times = [float(c) for c in times if c is not None]
    times += [c for t in things if (c := _created(t)) is not None]
    mark: dict[str, Any] = {"name": max(places)[1]} if places else {}
    if times:
        mark["created"] = max(times)
    return mark


def _oldest_first(things: list[Any]) -> list[Any]:
    """Parents before replies: by fullname id (what has none, first)."""
    return sorted(things, key=lambda t: _place(t) or -1)


class RedditSource(HttpSource):
    type = "reddit"
    Config: ClassVar[type[ConnectorConfig]] = RedditConfig
    config: RedditConfig
    fingerprint_fields = ("name",)  # the fullname: t3_<id> (a post), t1_<id> (a comment)

    def __init__(self, spec: SourceSpec, brand: Brand, **kwargs: Any) -> None:
        super().__init__(spec, brand, **kwargs)
        self.credentials = self._client_credentials()
        self._token: str | None = None
        self._token_until = 0.0  # time.monotonic() when the token must be renewed

    def _client_credentials(self) -> tuple[str, str] | None:
        """The OAuth app's id and secret (read at start-up: a missing one is an error)."""
        cfg, what = self.config, f"source {self.name}"
        client_id = read_secret(cfg.client_id_env, cfg.client_id_file, f"{what} client id")
        secret = read_secret(cfg.client_secret_env, cfg.client_secret_file, f"{what} secret")
        return (client_id, secret) if client_id and secret else None

    # -- configuration --

    def normalize_handle(self, handle: str) -> str:
        return handle.strip().lstrip("@").removeprefix("/").removeprefix("u/").lower()

    def feeds(self) -> Sequence[str]:
        cfg = self.config
        feeds = [f"new:{s}" for s in cfg.subreddits]
        if cfg.comments:
            feeds += [f"comments:{s}" for s in cfg.subreddits]
        keywords = cfg.keywords if cfg.keywords is not None else self.brand.keywords
        feeds += [f"search:{k}" for k in keywords]
        if cfg.brand_replies:
            accounts = self.brand.accounts.get(self.platform, [])
            feeds += [f"user:{self.normalize_handle(a)}" for a in accounts]
        return feeds

    # -- fetching --

    async def fetch_page(self, feed: str, cursor: Any, page_token: str | None) -> Page:
        kind, _, arg = feed.partition(":")
        state: dict[str, Any] = dict(cursor) if isinstance(cursor, dict) else {}
        # History (the first poll, a backfill) walks with "older:<after>" tokens; a walk
        # down to the cursor with plain ones, or from where a saved walk stopped.
        history = not state or (page_token or "").startswith("older:")
        if page_token:
            after: str | None = page_token.removeprefix("older:")
        else:
            after = None if history else state.get("after")
        params: dict[str, Any] = {"limit": self.config.limit, "raw_json": 1, "after": after}
        if kind in ("new", "comments"):
            path = f"/r/{arg}/{kind}"
        elif kind == "search":
            path = "/search"
            params.update(q=arg, sort="new", type="link")
        elif kind == "user":
            path = f"/user/{quote(arg, safe='')}/comments"
            params["sort"] = "new"
        else:
            raise ValueError(f"unknown feed {feed!r}")

        data = await self._listing(path, {k: v for k, v in params.items() if v is not None})
        children = data.get("children")
        if not isinstance(children, list):
            raise SourceError(f"{feed}: expected a Listing, got {str(data)[:100]}")
        next_after = data.get("after") if children else None
        if history:
            mark = _mark([state.get("name")], [state.get("created")], children)
            older = f"older:{next_after}" if next_after else None
            return Page(_oldest_first(children), cursor=mark or None, older_token=older)

        if after and not page_token and not children:
            # The item the saved walk stopped at is gone (deleted): walk again from the top.
            return Page([], cursor={k: state[k] for k in ("name", "created") if k in state})
        # Newest first: keep what comes before the first item the cursor has seen.
        seen, floor = _order(state.get("name")), state.get("created")
        fresh: list[Any] = []
        for thing in children:
            place, created = _place(thing), _created(thing)
            if seen is not None and place is not None and place <= seen:
                break
            if seen is None and floor is not None and created is not None and created < floor:
                break
            fresh.append(thing)
        below = len(fresh) < len(children)
        newest = _mark(
            [state.get("name"), state.get("newest_name")], [floor, state.get("newest")], fresh
        )
        if below or not next_after:  # down to the cursor: move it up
            return Page(_oldest_first(fresh), cursor=newest)
        walk = {k: state[k] for k in ("name", "created") if k in state}
        walk.update(after=next_after, newest_name=newest.get("name"), newest=newest.get("created"))
        return Page(_oldest_first(fresh), cursor=walk, next_token=next_after)

    async def _listing(self, path: str, params: dict[str, Any]) -> dict[str, Any]:
        if self.credentials:
            url = f"{self.config.oauth_url}{path}"
        else:
            url = f"{self.config.base_url}{path}.json"
        for renewed in (False, True):
            token = await self._bearer() if self.credentials else None
            headers = {"Authorization": f"bearer {token}"} if token else {}
            try:
                data, _ = await self.get_json(url, params=params, headers=headers)
                break
            except SourceError as exc:  # a token revoked before its time: renew it once
                if renewed or not self.credentials or "HTTP 401" not in str(exc):
                    raise
                self._token = None
        if not isinstance(data, dict) or data.get("kind") != "Listing":
            raise SourceError(f"{path}: expected a Listing, got {str(data)[:100]}")
        listing = data.get("data")
        if not isinstance(listing, dict):
            raise SourceError(f"{path}: the Listing has no data")
        return listing

    async def _bearer(self) -> str:
        if self._token and time.monotonic() < self._token_until:
            return self._token
        grant = {"grant_type": "client_credentials"}
        answer = await fetch_token(
            self,
            self.config.token_url,
            "access_token",
            what="access token",
            data=grant,
            auth=self.credentials,
        )
        self._token = str(answer["access_token"])
        # Renew a minute early; Reddit gives app-only tokens for a day (expires_in=86400).
        self._token_until = time.monotonic() + float(answer.get("expires_in") or 3600) - 60
        return self._token

    def _record_quota(self, headers: httpx.Headers) -> None:
        super()._record_quota(headers)
        # Reddit sends Used and Remaining, no Limit: the window's limit is their sum.
        used = headers.get("x-ratelimit-used")
        remaining = self.health.quota_remaining
        if self.health.quota_limit is None and used and remaining is not None:
            try:
                self.health.quota_limit = float(used) + remaining
            except ValueError:
                pass

    # -- mapping --

    def to_mention(self, item: Any) -> RawMention | None:
        if not isinstance(item, dict) or not isinstance(item.get("data"), dict):
            raise ValueError("expected a thing: {kind, data}")
        kind, data = item.get("kind"), item["data"]
        if kind not in ("t1", "t3"):
            if kind is None:
                raise ValueError("thing lacks 'kind'")
            return None  # a subreddit or an account in search results: not a post
        for key in ("name", "author", "created_utc", "permalink"):
            if data.get(key) in (None, ""):
                raise ValueError(f"{kind} lacks {key!r}")
        body = data.get("body") if kind == "t1" else data.get("selftext")
        if data["author"] in GONE or body in GONE:
            return None  # deleted by its author or removed by the moderators
        created = datetime.fromtimestamp(float(data["created_utc"]), UTC)
        name = str(data["name"])
        if kind == "t1":
            text, root, parent = str(body or ""), data.get("link_id"), data.get("parent_id")
            if not root or not parent:
                raise ValueError("t1 lacks 'link_id' or 'parent_id'")
        else:
            text = "\n\n".join(str(x) for x in (data.get("title"), body) if x)
            root, parent = name, None
        return self.mention(
            {"name": name},
            author_id=str(data.get("author_fullname") or data["author"]),
            handle=str(data["author"]),
            text=text,
            created_at=created,
            url=f"{WEB}{data['permalink']}",
            in_reply_to=parent,
            root=root,
            metadata={
                "reddit": {
                    "kind": kind,
                    "subreddit": data.get("subreddit"),
                    "score": data.get("score"),
                    "num_comments": data.get("num_comments"),
                    "link_title": data.get("link_title"),
                    "link_url": data.get("url") if kind == "t3" else None,
                }
            },
        )
