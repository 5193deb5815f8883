"""X (Twitter) API v2: recent search for the brand's keywords, and mentions of its accounts.

Needs an app's bearer token (``token_env`` or ``token_file``); without one the source does
not poll, and its health says why. Documentation followed:

- recent search ``GET /2/tweets/search/recent`` (the last 7 days; ``query`` up to 512
  characters, ``since_id``, ``max_results`` 10–100, ``next_token``):
  https://docs.x.com/x-api/posts/search/api-reference/get-tweets-search-recent
- mentions ``GET /2/users/:id/mentions`` (``since_id``, ``max_results`` 5–100,
  ``pagination_token``): https://docs.x.com/x-api/posts/user-mention-timeline-by-user-id
- the user id of a username ``GET /2/users/by/username/:username``:
  https://docs.x.com/x-api/users/user-lookup-by-username
- the answer ``{"data": [Post], "includes": {"users": [User]}, "meta": {"newest_id",
  "oldest_id", "result_count", "next_token"}}``, fields and expansions:
  https://docs.x.com/x-api/fundamentals/data-dictionary and
  https://docs.x.com/x-api/fundamentals/fields
- rate limits (``x-rate-limit-limit``/``-remaining``/``-reset``, the reset in epoch
  seconds; 429 when spent): https://docs.x.com/x-api/fundamentals/rate-limits — read by
  ``HttpSource.request``, which waits for the reset rather than collect a 429;
- the monthly post cap (posts read count against the project's cap):
  https://docs.x.com/x-api/fundamentals/post-cap

Feeds:

- ``search``: one query for the brand's keywords and hashtags, and the brand accounts'
  own replies (``from:<account> is:reply``: they answer cases), retweets excluded;
  ``query`` replaces it;
- ``mentions:<username>`` for each brand account: posts that mention it.

Cursor, per feed: ``since_id`` (the newest post id seen). Pages come newest first and
``next_token`` leads to older ones (still after ``since_id``), so a poll that needs more
than one page keeps its place (``walk``) in the cursor and moves ``since_id`` to the newest
id of its first page only after the last one: a restart goes on where it stopped.

The monthly post cap (``max_posts_per_month``): every post read is counted, per billing
period (from ``cap_reset_day``), and no request asks for more than the cap leaves. The
count travels in each feed's cursor (``usage``, the count when that feed's page was read),
so a restart carries it on: it takes the highest count of the cursors read so far, which
can run behind by what the later feeds read in the last poll before the restart (and by a
page read but never saved in a crash) until those feeds are polled. When the cap is spent,
polls fail with RateLimited until the period ends (the poller waits that long), and
``/health`` shows ``monthly_posts``/``monthly_cap``/``monthly_reset_at``.

Mapping: ``text`` (``note_tweet.text`` for long posts; entities unescaped); the author from
``includes.users`` (``username`` as handle, ``public_metrics.followers_count`` as reach);
``conversation_id`` as the thread's root, the ``replied_to`` reference as ``in_reply_to``;
``lang`` (``und`` and other non-languages dropped). Retweets are skipped.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote

from pydantic import Field

from services.ingest.listening import Brand, SourceSpec
from services.ingest.sources.http import (
    ConnectorConfig,
    HttpSource,
    Page,
    RateLimited,
    SourceError,
    SourceHealth,
    read_secret,
)
from shared.events import RawMention, utcnow

log = logging.getLogger(__name__)

HTTP_URL = r"^https?://[^/\s]+"  # base URLs: a scheme and a host at least
API = "https://api.x.com"
TWEET_FIELDS = (
    "created_at,lang,conversation_id,author_id,in_reply_to_user_id,referenced_tweets,"
    "public_metrics,note_tweet"
)
USER_FIELDS = "username,name,public_metrics,verified"
# ``lang`` values that name no language (undefined, emoji only, media only…).
NOT_LANGUAGES = {"und", "qme", "qam", "qct", "qht", "qst", "zxx", "art"}
MIN_RESULTS = {"search": 10, "mentions": 5}


class XConfig(ConnectorConfig):
    base_url: str = Field(default=API, pattern=HTTP_URL)
    # The app's bearer token: an environment variable or a file. Without it: no polling.
    token_env: str | None = None
    token_file: Path | None = None
    # What to search; None = the brand's keywords and hashtags.
    keywords: list[str] | None = None
    hashtags: list[str] | None = None
    # A full X query instead of the one built from keywords/hashtags/brand replies.
    query: str | None = None
    # Follow the brand accounts' replies (in the search query) and their mentions.
    brand_replies: bool = True
    mentions: bool = True
    exclude_retweets: bool = True
    max_results: int = Field(default=100, ge=10, le=100)
    # Posts read per billing period, at most (None: no cap of ours).
    max_posts_per_month: int | None = Field(default=None, ge=1)
    # The day of the month the project's cap resets (the developer console shows it).
    cap_reset_day: int = Field(default=1, ge=1, le=28)


@dataclass
class XHealth(SourceHealth):
    """The common health, plus the monthly post cap."""

    monthly_posts: int = 0
    monthly_cap: int | None = None
    monthly_reset_at: datetime | None = None


def billing_period(now: datetime, reset_day: int) -> tuple[datetime, datetime]:
    """The start and end of the cap's billing period that ``now`` falls in."""
    start = now.astimezone(UTC).replace(day=reset_day, hour=0, minute=0, second=0, microsecond=0)
    if now < start:
        start = _add_month(start, -1)
    return start, _add_month(start, 1)


def _add_month(when: datetime, months: int) -> datetime:
    index = when.year * 12 + when.month - 1 + months
    return when.replace(year=index // 12, month=index % 12 + 1)


def _id_key(value: str) -> tuple[int, str]:
    return (len(value), value)  # post ids are numeric strings that grow with time


def _newest(*ids: Any) -> str | None:
    values = [str(i) for i in ids if i not in (None, "")]
    return max(values, key=_id_key) if values else None


def _item_key(item: Any) -> tuple[int, str]:
    post = item.get("tweet") if isinstance(item, dict) else None
    return _id_key(str(post.get("id", ""))) if isinstance(post, dict) else (0, "")


def _quoted(term: str) -> str:
    term = term.strip()
    return f'"{term}"' if any(c.isspace() for c in term) else term


class XSource(HttpSource):
    type = "x"
    platform = "x"
    fingerprint_fields = ("id",)
    Config: ClassVar[type[ConnectorConfig]] = XConfig
    config: XConfig
    health: XHealth

    def __init__(self, spec: SourceSpec, brand: Brand, **kwargs: Any) -> None:
        super().__init__(spec, brand, **kwargs)
        self.health = XHealth(spec.name, self.type, monthly_cap=self.config.max_posts_per_month)
        self.config_error: str | None = None
        self.token: str | None = None
        try:
            self.token = read_secret(
                self.config.token_env, self.config.token_file, f"source {spec.name} bearer token"
            )
        except ValueError as exc:
            self.config_error = str(exc)
        if self.token is None and self.config_error is None:
            self.config_error = (
                f"source {spec.name}: no X bearer token configured "
                "(set token_env or token_file in its settings)"
            )
        if self.config_error:
            # Reported, not raised: the other sources run, /health says what is missing.
            self.health.up = False
            self.health.last_error = self.config_error
            log.error("%s; not polling X", self.config_error)
        self._user_ids: dict[str, str] = {}
        self._period_start: datetime | None = None
        self._usage(None)  # the billing period, for /health before the first poll

    # -- configuration --

    @property
    def api(self) -> str:
        return self.config.base_url.rstrip("/")

    @property
    def accounts(self) -> list[str]:
        return [a.strip().lstrip("@") for a in self.brand.accounts.get(self.platform, [])]

    def search_query(self) -> str | None:
        if self.config.query:
            return self.config.query
        kws = self.config.keywords if self.config.keywords is not None else self.brand.keywords
        tags = self.config.hashtags if self.config.hashtags is not None else self.brand.hashtags
        terms = [_quoted(k) for k in kws] + [f"#{t.lstrip('#')}" for t in tags]
        if self.config.brand_replies:
            terms += [f"(from:{a} is:reply)" for a in self.accounts]
        if not terms:
            return None
        query = f"({' OR '.join(terms)})" if len(terms) > 1 else terms[0]
        return f"{query} -is:retweet" if self.config.exclude_retweets else query

    def feeds(self) -> Sequence[str]:
        feeds = ["search"] if self.search_query() else []
        if self.config.mentions:
            feeds += [f"mentions:{a}" for a in self.accounts]
        return feeds

    # -- the monthly cap --

    def _usage(self, cursor: dict[str, Any] | None) -> int:
        """Posts read in this billing period: this process's count, or more when a cursor
        saved by an earlier run says so."""
        start, end = billing_period(utcnow(), self.config.cap_reset_day)
        h = self.health
        if self._period_start != start:
            self._period_start, h.monthly_posts, h.monthly_reset_at = start, 0, end
        saved = (cursor or {}).get("usage") or {}
        if saved.get("period") == start.date().isoformat():
            h.monthly_posts = max(h.monthly_posts, int(saved.get("posts", 0)))
        return h.monthly_posts

    def _usage_mark(self) -> dict[str, Any]:
        start = self._period_start or billing_period(utcnow(), self.config.cap_reset_day)[0]
        return {"period": start.date().isoformat(), "posts": self.health.monthly_posts}

    def _max_results(self, kind: str, cursor: dict[str, Any] | None) -> int:
        used = self._usage(cursor)
        cap = self.config.max_posts_per_month
        if cap is None:
            return self.config.max_results
        left = cap - used
        if left < MIN_RESULTS[kind]:
            reset = self.health.monthly_reset_at or utcnow()
            wait = max(1.0, (reset - utcnow()).total_seconds())
            raise RateLimited(
                f"monthly post cap spent: {used} of {cap} posts read "
                f"(max_posts_per_month); polling resumes {reset.isoformat()}",
                wait,
            )
        return min(self.config.max_results, left)

    # -- fetching --

    @property
    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def fetch_page(self, feed: str, cursor: Any, page_token: str | None) -> Page:
        if self.config_error:
            raise SourceError(self.config_error)
        cursor = cursor if isinstance(cursor, dict) else None
        kind, _, account = feed.partition(":")
        if kind not in MIN_RESULTS:
            raise ValueError(f"unknown feed {feed!r}")
        since = cursor.get("since_id") if cursor else None
        walk = cursor.get("walk") if cursor else None
        direction, token = "newer", None
        if page_token is not None:
            direction, _, token = page_token.partition(":")
            if direction not in ("older", "newer") or not token:
                raise SourceError(f"not a page token of this source: {page_token!r}")
        elif walk:  # a walk that a restart (or max_pages_per_poll) cut short goes on
            token = walk.get("token")
        newer = direction == "newer" and since is not None
        params: list[tuple[str, Any]] = [
            ("max_results", self._max_results(kind, cursor)),
            ("tweet.fields", TWEET_FIELDS),
            ("expansions", "author_id"),
            ("user.fields", USER_FIELDS),
        ]
        if kind == "search":
            url = f"{self.api}/2/tweets/search/recent"
            params.insert(0, ("query", self.search_query()))
            token_name = "next_token"
        else:
            user_id = await self._user_id(account)
            url = f"{self.api}/2/users/{user_id}/mentions"
            token_name = "pagination_token"
        if newer:
            params.append(("since_id", since))
        if token:
            params.append((token_name, token))

        data, _ = await self.get_json(url, params=params, headers=self._headers)
        if not isinstance(data, dict):
            raise SourceError(f"{feed}: expected a JSON object, got {type(data).__name__}")
        posts = data.get("data") or []
        meta = data.get("meta") or {}
        if not isinstance(posts, list) or not isinstance(meta, dict):
            raise SourceError(f"{feed}: 'data' is not a list of posts")
        self.health.monthly_posts += len(posts)
        users = {
            str(u["id"]): u
            for u in (data.get("includes") or {}).get("users") or []
            if isinstance(u, dict) and u.get("id")
        }
        items = [
            {"tweet": p, "user": users.get(str(p.get("author_id")))} if isinstance(p, dict) else p
            for p in posts
        ]
        items.sort(key=_item_key)  # oldest first: parents before replies

        ids = [str(p["id"]) for p in posts if isinstance(p, dict) and p.get("id")]
        top = _newest(meta.get("newest_id"), *ids)
        more = meta.get("next_token") if posts else None
        next_token = older_token = None
        if not newer:  # the first poll, backfill: the newest page, then older ones
            new_cursor: dict[str, Any] = {"since_id": _newest(since, top)}
            older_token = f"older:{more}" if more else None
        else:
            newest = _newest(walk.get("newest") if walk else None, top)
            if more:
                next_token = f"newer:{more}"
                new_cursor = {"since_id": since, "walk": {"token": more, "newest": newest}}
            else:
                new_cursor = {"since_id": _newest(since, newest)}
        new_cursor["usage"] = self._usage_mark()
        return Page(items, cursor=new_cursor, next_token=next_token, older_token=older_token)

    async def _user_id(self, username: str) -> str:
        key = username.lower()
        if key not in self._user_ids:
            data, _ = await self.get_json(
                f"{self.api}/2/users/by/username/{quote(username, safe='')}",
                headers=self._headers,
            )
            user = data.get("data") if isinstance(data, dict) else None
            if not isinstance(user, dict) or not user.get("id"):
                raise SourceError(f"user lookup for {username!r} returned no id: {data}")
            self._user_ids[key] = str(user["id"])
        return self._user_ids[key]

    # -- mapping --

    def to_mention(self, item: Any) -> RawMention | None:
        if not isinstance(item, dict) or not isinstance(item.get("tweet"), dict):
            raise ValueError(f"expected a Post object, got {type(item).__name__}")
        post = item["tweet"]
        refs = [r for r in post.get("referenced_tweets") or [] if isinstance(r, dict)]
        if any(r.get("type") == "retweeted" for r in refs):
            return None  # a repost repeats a post; the original is what counts
        for key in ("id", "text", "created_at", "author_id"):
            if post.get(key) in (None, ""):
                raise ValueError(f"Post lacks {key!r}")
        pid, author_id = str(post["id"]), str(post["author_id"])
        user = item.get("user") if isinstance(item.get("user"), dict) else {}
        username = user.get("username")
        followers = (user.get("public_metrics") or {}).get("followers_count")
        note = post.get("note_tweet")
        text = note.get("text") if isinstance(note, dict) and note.get("text") else post["text"]
        parent = next((r.get("id") for r in refs if r.get("type") == "replied_to"), None)
        lang = post.get("lang")
        url = f"https://x.com/{username}/status/{pid}" if username else None
        return self.mention(
            post,
            author_id=author_id,
            handle=username,
            followers=followers if isinstance(followers, int) and followers >= 0 else None,
            text=html.unescape(str(text)),
            created_at=post["created_at"],
            url=url or f"https://x.com/i/web/status/{pid}",
            in_reply_to=str(parent) if parent else None,
            root=str(post.get("conversation_id") or parent or pid),
            lang=None if not lang or lang in NOT_LANGUAGES else lang,
            metadata={
                "x": {
                    "name": user.get("name"),
                    "verified": user.get("verified"),
                    "public_metrics": post.get("public_metrics"),
                    "referenced_tweets": refs,
                }
            },
        )
