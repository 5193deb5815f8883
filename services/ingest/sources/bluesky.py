"""Bluesky: keyword and hashtag search, mentions of the brand, and the brand's own replies.

Read through the Bluesky AppView's XRPC API (default ``https://public.api.bsky.app``).
Documentation followed:

- post search ``GET /xrpc/app.bsky.feed.searchPosts`` (``q``, ``sort=latest``, ``since``
  inclusive, ``until`` exclusive, ``mentions``, ``lang``, ``limit`` ≤ 100, ``cursor``;
  answers ``{cursor, hitsTotal, posts: [PostView]}``):
  https://docs.bsky.app/docs/api/app-bsky-feed-search-posts
- an account's posts ``GET /xrpc/app.bsky.feed.getAuthorFeed`` (``actor``,
  ``filter=posts_with_replies``; answers ``{cursor, feed: [FeedViewPost]}``):
  https://docs.bsky.app/docs/api/app-bsky-feed-get-author-feed
- the post record (``text``, ``createdAt``, ``langs``, ``reply.root``/``reply.parent``):
  https://github.com/bluesky-social/atproto/blob/main/lexicons/app/bsky/feed/post.json
- a session with an app password ``POST /xrpc/com.atproto.server.createSession``:
  https://docs.bsky.app/docs/api/com-atproto-server-create-session
- rate limits (3000 requests per 5 minutes per IP; ``RateLimit-*`` headers, read by the
  framework): https://docs.bsky.app/docs/advanced-guides/rate-limits

Feeds (each with its own cursor):

- ``search:<keyword>`` and ``tag:<hashtag>`` (``q=#hashtag``) — the brand's lists;
- ``mentions:<handle>`` for each brand account (``q=@handle`` and ``mentions=handle``);
- ``replies:<handle>`` for each brand account — its replies (``getAuthorFeed``; reposts
  and its top-level posts are skipped): they answer cases.

Search and authentication: the public AppView has at times refused unauthenticated
``searchPosts`` (403, https://github.com/bluesky-social/atproto/issues/3423). With an app
password (``identifier`` + ``app_password_env``/``app_password_file``) the connector opens a
session on the account's PDS (``pds``, default ``https://bsky.social``), sends its requests
there (the PDS proxies them to the AppView) and opens a new session when the access token
expires. ``token_env``/``token_file`` send a ready access token instead.

Cursors: per feed ``{"since": <newest sortAt published>}`` (``sortAt`` is the earlier of
``createdAt`` and ``indexedAt``, what ``since``/``until`` filter on). Search answers newest
first, so a poll asks for everything since the cursor (less ``overlap_seconds``, for posts
indexed late) and walks down with the API's ``cursor``; only when the walk reaches the
bottom does ``since`` move to the newest post seen. Until then the saved cursor also holds
``newest`` and ``until`` (the oldest post published so far), so a restart or a poll cut
short by ``max_pages_per_poll`` goes on below ``until`` instead of losing or re-walking
the window. Posts seen twice (the overlap, a page boundary) have one external id, the
post's ``at://`` URI, and the publisher drops the repeat. The brand's replies feed has no
``since``/``until`` parameters: it walks down from the newest post to the cursor.

Threading: ``conversation_id`` is ``bluesky:<root post URI>`` (``record.reply.root``, the
post itself when it is no reply); ``in_reply_to`` is the parent's URI.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

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

PUBLIC_APPVIEW = "https://public.api.bsky.app"
PAGE_LIMIT_MAX = 100  # searchPosts and getAuthorFeed
SEARCH_FEEDS = ("search", "tag", "mentions")
_EXPIRED = ("ExpiredToken", "InvalidToken", "HTTP 401")


def _origin(value: str) -> str:
    parts = urlsplit(value.strip())
    if parts.scheme in ("http", "https") and parts.netloc:
        return f"{parts.scheme}://{parts.netloc}"
    raise ValueError(f"must be a server's URL, e.g. {PUBLIC_APPVIEW}")


class BlueskyConfig(ConnectorConfig):
    # Where the XRPC calls go; default: the PDS with credentials, else the public AppView.
    service: str | None = None
    # Keywords / hashtags to search; None = the brand's own lists.
    keywords: list[str] | None = None
    hashtags: list[str] | None = None
    mentions: bool = True  # posts mentioning each brand account
    brand_replies: bool = True  # the brand accounts' replies (they answer cases)
    lang: str | None = None  # searchPosts ``lang`` filter (the brand's languages apply anyway)
    limit: int = Field(default=PAGE_LIMIT_MAX, ge=1, le=PAGE_LIMIT_MAX)
    # Search again this far below the cursor: posts indexed late are not lost.
    overlap_seconds: float = Field(default=120.0, ge=0)
    # An app password session: the account (handle or DID), the password by env or file.
    identifier: str | None = None
    app_password_env: str | None = None
    app_password_file: Path | None = None
    pds: str = "https://bsky.social"
    # Or a ready access token (short-lived: something else must keep it fresh).
    token_env: str | None = None
    token_file: Path | None = None

    @field_validator("service", "pds")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        return None if v is None else _origin(v)

    @model_validator(mode="after")
    def _auth(self) -> BlueskyConfig:
        password = self.app_password_env or self.app_password_file
        if password and not self.identifier:
            raise ValueError("an app password needs identifier (the account's handle or DID)")
        if password and (self.token_env or self.token_file):
            raise ValueError("use an app password or a token, not both")
        return self


def _when(value: Any) -> datetime | None:
    """An AT Protocol datetime (RFC 3339), or None when it is not one."""
    if not isinstance(value, str):
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return None
    return when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)


def _stamp(when: datetime) -> str:
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def sort_at(post: Any) -> datetime | None:
    """The time search sorts and filters a post by: the earlier of createdAt and indexedAt."""
    if not isinstance(post, dict):
        return None
    record = post.get("record") if isinstance(post.get("record"), dict) else {}
    times = [t for t in (_when(post.get("indexedAt")), _when(record.get("createdAt"))) if t]
    return min(times) if times else None


def _latest(*values: Any) -> datetime | None:
    times = [t for t in (v if isinstance(v, datetime) else _when(v) for v in values) if t]
    return max(times) if times else None


class BlueskySource(HttpSource):
    type = "bluesky"
    Config: ClassVar[type[ConnectorConfig]] = BlueskyConfig
    config: BlueskyConfig
    fingerprint_fields = ("uri",)  # at://<did>/app.bsky.feed.post/<rkey>

    def __init__(self, spec: SourceSpec, brand: Brand, **kwargs: Any) -> None:
        super().__init__(spec, brand, **kwargs)
        cfg = self.config
        # Read at start-up: a missing variable or file is a configuration error.
        self.password = read_secret(
            cfg.app_password_env, cfg.app_password_file, f"source {spec.name} app password"
        )
        self.token = read_secret(cfg.token_env, cfg.token_file, f"source {spec.name} token")
        signed_in = self.password or self.token
        self.service = cfg.service or (cfg.pds if signed_in else PUBLIC_APPVIEW)

    # -- configuration --

    @property
    def accounts(self) -> list[str]:
        return [self.normalize_handle(a) for a in self.brand.accounts.get(self.platform, [])]

    def feeds(self) -> Sequence[str]:
        cfg = self.config
        keywords = cfg.keywords if cfg.keywords is not None else self.brand.keywords
        hashtags = cfg.hashtags if cfg.hashtags is not None else self.brand.hashtags
        feeds = [f"search:{k}" for k in keywords] + [f"tag:{t.lstrip('#')}" for t in hashtags]
        if cfg.mentions:
            feeds += [f"mentions:{a}" for a in self.accounts]
        if cfg.brand_replies:
            feeds += [f"replies:{a}" for a in self.accounts]
        return feeds

    # -- fetching --

    async def fetch_page(self, feed: str, cursor: Any, page_token: str | None) -> Page:
        kind, _, arg = feed.partition(":")
        state: dict[str, Any] = dict(cursor) if isinstance(cursor, dict) else {}
        # The walk's bounds: fixed for all its pages (the API's cursor belongs to one query).
        if page_token is not None:
            walk = json.loads(page_token)
        elif since := _when(state.get("since")):
            until = _when(state.get("until"))  # a walk cut short: go on below it
            walk = {
                "since": _stamp(since - timedelta(seconds=self.config.overlap_seconds)),
                "until": _stamp(until + timedelta(milliseconds=1)) if until else None,
            }
        else:  # the first poll or a backfill: the newest posts, then history
            walk = {"since": None, "until": None}

        params: dict[str, Any] = {"limit": self.config.limit}
        if walk.get("cursor"):
            params["cursor"] = walk["cursor"]
        if kind in SEARCH_FEEDS:
            method = "app.bsky.feed.searchPosts"
            params.update(q={"tag": f"#{arg}", "mentions": f"@{arg}"}.get(kind, arg))
            params.update(sort="latest", since=walk["since"], until=walk["until"])
            params.update(mentions=arg if kind == "mentions" else None, lang=self.config.lang)
        elif kind == "replies":
            method = "app.bsky.feed.getAuthorFeed"
            params.update(actor=arg, filter="posts_with_replies")
        else:
            raise ValueError(f"unknown feed {feed!r}")
        data = await self._xrpc(method, {k: v for k, v in params.items() if v is not None})

        page = data.get("posts" if kind in SEARCH_FEEDS else "feed")
        if not isinstance(page, list):
            raise SourceError(f"{feed}: expected a list of posts, got {type(page).__name__}")
        posts = self._replies(page) if kind == "replies" else list(page)
        seen = [p.get("post") if isinstance(p, dict) and kind == "replies" else p for p in page]
        times = [t for t in map(sort_at, seen) if t]
        floor = _when(walk["since"])
        below = floor is not None and any(t < floor for t in times)
        if floor is not None:  # the author feed has no since: drop what is below it here
            posts = [p for p in posts if not ((t := sort_at(p)) and t < floor)]
        more = bool(data.get("cursor")) and bool(page) and not below
        token = json.dumps({**walk, "cursor": data["cursor"]}) if more else None
        # Oldest first: parents before replies.
        posts.sort(key=lambda p: _stamp(t) if (t := sort_at(p)) else "")

        if floor is None:  # history: the cursor is the newest post seen
            newest = _latest(state.get("since"), *times)
            new_cursor = {"since": _stamp(newest)} if newest else None
            return Page(posts, cursor=new_cursor, older_token=token)
        newest = _latest(state.get("since"), state.get("newest"), *times)
        if newest is None:  # nothing dated seen, no cursor given: leave it
            return Page(posts, next_token=token)
        if token is None:  # the walk reached the cursor: move it up
            return Page(posts, cursor={"since": _stamp(newest)})
        lowest = min([*times, *filter(None, [_when(state.get("until"))])], default=None)
        new_cursor = {"since": state.get("since") or walk["since"], "newest": _stamp(newest)}
        if lowest is not None:
            new_cursor["until"] = _stamp(lowest)
        return Page(posts, cursor=new_cursor, next_token=token)

    def _replies(self, feed: list[Any]) -> list[Any]:
        """The brand's replies in an author feed: no reposts, no top-level posts."""
        out = []
        for entry in feed:
            if not isinstance(entry, dict) or not isinstance(entry.get("post"), dict):
                out.append(entry)  # malformed: dead-lettered by to_mention
            elif not entry.get("reason") and (entry["post"].get("record") or {}).get("reply"):
                out.append(entry["post"])
        return out

    async def _xrpc(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        url = f"{self.service}/xrpc/{method}"
        headers = await self._auth()
        try:
            data, _ = await self.get_json(url, params=params, headers=headers)
        except SourceError as exc:
            if not self.password or not any(e in str(exc) for e in _EXPIRED):
                raise
            self.token = None  # the session's access token expired: open a new one
            data, _ = await self.get_json(url, params=params, headers=await self._auth())
        if not isinstance(data, dict):
            raise SourceError(f"{method}: expected a JSON object, got {type(data).__name__}")
        return data

    async def _auth(self) -> dict[str, str]:
        if self.password and not self.token:
            self.token = await self._create_session()
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    async def _create_session(self) -> str:
        url = f"{self.config.pds}/xrpc/com.atproto.server.createSession"
        body = {"identifier": self.config.identifier, "password": self.password}
        session = await fetch_token(self, url, "accessJwt", what="createSession", json=body)
        return str(session["accessJwt"])

    # -- mapping --

    def to_mention(self, item: Any) -> RawMention | None:
        if not isinstance(item, dict):
            raise ValueError(f"expected a PostView object, got {type(item).__name__}")
        uri, author, record = item.get("uri"), item.get("author"), item.get("record")
        if not isinstance(uri, str) or not uri.startswith("at://"):
            raise ValueError(f"PostView lacks an at:// uri: {uri!r}")
        did, collection, rkey = [*uri.removeprefix("at://").split("/"), "", ""][:3]
        if collection != "app.bsky.feed.post" or not rkey:
            raise ValueError(f"not a post URI: {uri}")
        if not isinstance(author, dict) or not author.get("did"):
            raise ValueError("PostView.author lacks 'did'")
        if not isinstance(record, dict) or "createdAt" not in record:
            raise ValueError("PostView.record lacks 'createdAt'")
        handle = author.get("handle")
        handle = handle if isinstance(handle, str) and handle != "handle.invalid" else None
        reply = record.get("reply") if isinstance(record.get("reply"), dict) else {}
        parent, root = (reply.get(k) or {} for k in ("parent", "root"))
        langs = record.get("langs")
        return self.mention(
            {"uri": uri},
            author_id=str(author["did"]),
            handle=handle,
            text=str(record.get("text") or ""),
            created_at=record["createdAt"],
            url=f"https://bsky.app/profile/{handle or did}/post/{rkey}",
            in_reply_to=parent.get("uri"),
            root=root.get("uri") or uri,
            lang=langs[0] if isinstance(langs, list) and langs else None,
            metadata={
                "bluesky": {
                    "cid": item.get("cid"),
                    "display_name": author.get("displayName"),
                    "indexed_at": item.get("indexedAt"),
                    "reply_count": item.get("replyCount"),
                    "repost_count": item.get("repostCount"),
                    "like_count": item.get("likeCount"),
                }
            },
        )
