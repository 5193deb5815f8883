"""Mastodon: hashtags, keyword search, mentions of the brand, and the brand's own replies.

The reference connector of ``services.ingest.sources.http``. One instance (server) per
configured source; several sources may watch several servers. Documentation followed:

- Status entity: https://docs.joinmastodon.org/entities/Status/
- hashtag timeline ``GET /api/v1/timelines/tag/:hashtag``:
  https://docs.joinmastodon.org/methods/timelines/#tag
- search ``GET /api/v2/search?type=statuses&q=``: https://docs.joinmastodon.org/methods/search/
- notifications ``GET /api/v1/notifications?types[]=mention``:
  https://docs.joinmastodon.org/methods/notifications/
- an account's statuses ``GET /api/v1/accounts/:id/statuses`` and
  ``GET /api/v1/accounts/lookup?acct=``: https://docs.joinmastodon.org/methods/accounts/
- a thread ``GET /api/v1/statuses/:id/context``: https://docs.joinmastodon.org/methods/statuses/#context
- paging (``Link`` header, ``max_id``/``since_id``/``min_id``) and rate limits
  (``X-RateLimit-*``, 300 requests per 5 minutes by default):
  https://docs.joinmastodon.org/api/guidelines/#pagination and
  https://docs.joinmastodon.org/api/rate-limits/

Feeds (each with its own cursor, the newest id seen):

- ``tag:<hashtag>`` — public, no token;
- ``account:<acct>`` — the brand account's own replies (public): they answer cases;
- ``search:<keyword>`` — full-text search of statuses needs a token on most servers, so it
  is only followed when a token is configured;
- ``notifications`` — statuses that mention the brand account: the token must belong to it
  (scope ``read:notifications``).

Ids: status ids are local to the server that answered, so the external id is
``<server host>:<status id>`` (the same post seen through two servers is two events).

Threading: ``conversation_id`` is ``mastodon:<host>:<root status id>``. The root of a reply
is taken from the thread index when its parent was seen; otherwise the connector asks the
server for the thread (``/statuses/:id/context``, whose first ancestor is the root) and
remembers it. With ``resolve_threads: false``, or when the context is not available, a
reply joins its parent's conversation.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, quote, urlencode, urlsplit, urlunsplit

from pydantic import Field, field_validator

from services.ingest.listening import Brand, SourceSpec
from services.ingest.sources.http import (
    ConnectorConfig,
    HttpSource,
    Page,
    SourceError,
    parse_link_header,
    read_secret,
)
from services.ingest.sources.text import html_to_text
from services.ingest.threads import ThreadIndex
from shared.events import RawMention

PAGE_LIMIT_MAX = 40  # the API's maximum for timelines, notifications and search


class MastodonConfig(ConnectorConfig):
    # The server to ask, e.g. https://mastodon.social
    instance: str
    # Hashtags / keywords to follow; None = the brand's own lists.
    hashtags: list[str] | None = None
    keywords: list[str] | None = None
    # Follow the brand accounts' replies (public timeline of each Mastodon account).
    brand_replies: bool = True
    # With a token: mentions of the account that owns it.
    notifications: bool = True
    # Look up the root of a reply whose parent was not seen (one request per such reply).
    resolve_threads: bool = True
    local_only: bool = False  # hashtag timeline: only this server's posts
    limit: int = Field(default=PAGE_LIMIT_MAX, ge=1, le=PAGE_LIMIT_MAX)
    # The access token (read scopes only): an environment variable or a file.
    token_env: str | None = None
    token_file: Path | None = None

    @field_validator("instance")
    @classmethod
    def _instance(cls, v: str) -> str:
        parts = urlsplit(v.strip())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be the server's URL, e.g. https://mastodon.social")
        return f"{parts.scheme}://{parts.netloc}"


def _id_key(value: str) -> tuple[int, str]:
    # Mastodon ids are numeric strings that grow with time: compare by length, then text.
    return (len(value), value)


def _newest(*ids: Any) -> str | None:
    values = [str(i) for i in ids if i not in (None, "")]
    return max(values, key=_id_key) if values else None


def _query_param(url: str, name: str) -> str | None:
    values = parse_qs(urlsplit(url).query).get(name)
    return values[0] if values else None


class MastodonSource(HttpSource):
    type = "mastodon"
    fingerprint_fields = ("instance", "id")
    Config: ClassVar[type[ConnectorConfig]] = MastodonConfig
    config: MastodonConfig

    def __init__(self, spec: SourceSpec, brand: Brand, **kwargs: Any) -> None:
        self.host = urlsplit(MastodonConfig.model_validate(spec.settings).instance).netloc.lower()
        super().__init__(spec, brand, **kwargs)
        self.token = read_secret(
            self.config.token_env, self.config.token_file, f"source {spec.name} token"
        )
        self.threads = ThreadIndex()
        self._account_ids: dict[str, str] = {}

    # -- configuration --

    def normalize_handle(self, handle: str) -> str:
        h = handle.strip().lstrip("@").lower()
        return h if "@" in h else f"{h}@{self.host}"

    @property
    def hashtags(self) -> list[str]:
        tags = self.config.hashtags if self.config.hashtags is not None else self.brand.hashtags
        return [t.lstrip("#") for t in tags]

    @property
    def keywords(self) -> list[str]:
        return self.config.keywords if self.config.keywords is not None else self.brand.keywords

    def feeds(self) -> Sequence[str]:
        feeds = [f"tag:{t}" for t in self.hashtags]
        if self.config.brand_replies:
            feeds += [f"account:{a.lstrip('@')}" for a in self.brand.accounts.get("mastodon", [])]
        if self.token:
            feeds += [f"search:{k}" for k in self.keywords]
            if self.config.notifications:
                feeds.append("notifications")
        return feeds

    # -- fetching --

    @property
    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def _url(self, path: str) -> str:
        return f"{self.config.instance}{path}"

    async def fetch_page(self, feed: str, cursor: Any, page_token: str | None) -> Page:
        kind, _, arg = feed.partition(":")
        limit = self.config.limit
        params: list[tuple[str, Any]] = [("limit", limit)]
        if page_token is not None:
            if not page_token.startswith(self.config.instance + "/"):
                raise SourceError(f"refusing a page link off {self.config.instance}: {page_token}")
            url, params = page_token, []
        elif kind == "tag":
            url = self._url(f"/api/v1/timelines/tag/{quote(arg, safe='')}")
            if self.config.local_only:
                params.append(("local", "true"))
        elif kind == "account":
            account_id = await self._account_id(arg)
            url = self._url(f"/api/v1/accounts/{account_id}/statuses")
            params.append(("exclude_reblogs", "true"))
        elif kind == "search":
            url = self._url("/api/v2/search")
            params += [("q", arg), ("type", "statuses"), ("resolve", "false")]
        elif kind == "notifications":
            url = self._url("/api/v1/notifications")
            params.append(("types[]", "mention"))
        else:
            raise ValueError(f"unknown feed {feed!r}")
        if page_token is None and cursor is not None:
            params.append(("min_id", cursor))

        data, response = await self.get_json(url, params=params or None, headers=self._headers)
        if kind == "search":
            data = data.get("statuses") if isinstance(data, dict) else None
        if not isinstance(data, list):
            raise SourceError(f"{feed}: expected a JSON array, got {type(data).__name__}")

        ids = [str(x["id"]) for x in data if isinstance(x, dict) and x.get("id") is not None]
        items = self._statuses(kind, data)
        links = parse_link_header(response.headers.get("link"))
        next_token = older_token = None
        if data:
            next_token = links.get("prev")
            older_token = links.get("next")
            if "prev" not in links and "next" not in links and len(data) >= limit and ids:
                # No Link header (search): page by ids ourselves.
                next_token = self._with(url, params, min_id=max(ids, key=_id_key))
                older_token = self._with(url, params, max_id=min(ids, key=_id_key))
        newest = _query_param(next_token, "min_id") if next_token else None
        new_cursor = _newest(cursor, newest, *ids)
        # Oldest first: parents before replies, and the topic in the posts' own order.
        items.sort(key=lambda s: _id_key(str(s.get("id", ""))) if isinstance(s, dict) else (0, ""))
        await self._thread(items)
        return Page(items, cursor=new_cursor, next_token=next_token, older_token=older_token)

    def _statuses(self, kind: str, data: list[Any]) -> list[Any]:
        if kind == "notifications":
            out = []
            for n in data:
                if isinstance(n, dict) and n.get("type") not in (None, "mention"):
                    continue  # a follow, a favourite: not a post
                out.append(n.get("status") if isinstance(n, dict) and n.get("status") else n)
            return out
        if kind == "account":
            # The brand's own replies answer conversations; its other posts open none.
            return [s for s in data if not isinstance(s, dict) or s.get("in_reply_to_id")]
        return list(data)

    def _with(self, url: str, params: list[tuple[str, Any]], **extra: str) -> str:
        parts = urlsplit(url)
        paging = ("min_id", "max_id", "since_id")
        query = [(k, v) for k, vs in parse_qs(parts.query).items() for v in vs if k not in paging]
        query += [(k, v) for k, v in params if k not in paging]
        query += list(extra.items())
        return urlunsplit(parts._replace(query=urlencode(query)))

    async def _account_id(self, acct: str) -> str:
        if acct not in self._account_ids:
            data, _ = await self.get_json(
                self._url("/api/v1/accounts/lookup"), params={"acct": acct}, headers=self._headers
            )
            if not isinstance(data, dict) or not data.get("id"):
                raise SourceError(f"account lookup for {acct!r} returned no id")
            self._account_ids[acct] = str(data["id"])
        return self._account_ids[acct]

    async def _thread(self, statuses: list[Any]) -> None:
        for s in statuses:
            if not isinstance(s, dict) or s.get("id") is None:
                continue  # malformed: dead-lettered by to_mention
            sid, parent = str(s["id"]), s.get("in_reply_to_id")
            parent = str(parent) if parent is not None else None
            parent_root = None
            if parent is not None and parent not in self.threads and self.config.resolve_threads:
                parent_root = await self._context_root(sid)
            self.threads.add(sid, parent, parent_root)

    async def _context_root(self, status_id: str) -> str | None:
        try:
            data, _ = await self.get_json(
                self._url(f"/api/v1/statuses/{status_id}/context"), headers=self._headers
            )
        except SourceError:
            return None  # gone or private: join the parent's conversation instead
        ancestors = data.get("ancestors") if isinstance(data, dict) else None
        if not ancestors or not isinstance(ancestors[0], dict) or not ancestors[0].get("id"):
            return None
        root = str(ancestors[0]["id"])
        for a in ancestors:  # remember the chain: later replies to any of them resolve free
            if isinstance(a, dict) and a.get("id") is not None:
                self.threads.add(str(a["id"]), None if str(a["id"]) == root else root, root)
        return root

    # -- mapping --

    def to_mention(self, item: Any) -> RawMention | None:
        if not isinstance(item, dict):
            raise ValueError(f"expected a Status object, got {type(item).__name__}")
        if item.get("reblog"):
            return None  # a boost repeats a post; the original is what counts
        for key in ("id", "created_at", "account"):
            if item.get(key) in (None, ""):
                raise ValueError(f"Status lacks {key!r}")
        account = item["account"]
        if not isinstance(account, dict) or not account.get("acct"):
            raise ValueError("Status.account lacks 'acct'")
        sid = str(item["id"])
        acct = self.normalize_handle(str(account["acct"]))
        parent = item.get("in_reply_to_id")
        text = html_to_text(str(item.get("content") or ""))
        if item.get("spoiler_text"):
            text = f"[CW: {item['spoiler_text']}] {text}"
        followers = account.get("followers_count")
        return self.mention(
            {"instance": self.host, "id": sid},
            author_id=acct,
            handle=acct,
            followers=followers if isinstance(followers, int) and followers >= 0 else None,
            text=text,
            created_at=item["created_at"],
            url=item.get("url") or item.get("uri"),
            in_reply_to=self.external_id({"instance": self.host, "id": parent}) if parent else None,
            root=f"{self.host}:{self.threads.root(sid) or sid}",
            lang=item.get("language"),
            metadata={
                "mastodon": {
                    "uri": item.get("uri"),
                    "visibility": item.get("visibility"),
                    "tags": [t.get("name") for t in item.get("tags") or [] if isinstance(t, dict)],
                }
            },
        )
