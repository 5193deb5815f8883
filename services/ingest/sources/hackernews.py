"""Hacker News: stories and comments that name the brand, through the Algolia HN Search API.

Public, no token. Documentation followed:

- the API: https://hn.algolia.com/api (``GET /api/v1/search_by_date``: newest first;
  ``query``, ``tags=(story,comment)`` (OR), ``numericFilters=created_at_i>=N``, ``page``
  (from 0), ``hitsPerPage``; the answer ``{"hits": […], "page", "nbPages", "hitsPerPage",
  "nbHits"}``);
- a hit: ``objectID``, ``created_at``/``created_at_i``, ``author``, ``title``,
  ``story_text`` and ``url`` (stories), ``comment_text``, ``story_id``, ``parent_id`` and
  ``story_title`` (comments), ``_tags`` (``story``, ``comment``, ``author_<name>``,
  ``story_<id>``…); texts are HTML (paragraphs as ``<p>``);
- limits: 10,000 requests per hour per IP (https://hn.algolia.com/api).

Feeds: ``search:<keyword>`` for each keyword (the brand's, or the ``keywords`` setting).

Cursor, per feed: the newest ``created_at_i`` seen and the ids of the hits at that second
(``{"t": 1795770000, "ids": ["46001002"]}``); a poll asks for ``created_at_i>=t`` and drops
those ids, so the second's hits are neither lost nor repeated. The answer is newest first
and pages by number; a poll that needs more than one page fixes the upper bound
(``created_at_i<=`` the newest hit of its first page) so that new hits do not shift the
pages under it, and keeps its place (``walk``) in the cursor until the last page, so a
restart goes on where it stopped and the cursor moves to the newest hit only then.

Threading: a comment joins its story's conversation (``hackernews:<story_id>``) and
replies to ``parent_id``; a story opens its own. The brand's accounts (``accounts:
{hackernews: [...]}``) and VIPs are HN usernames.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from pydantic import Field

from services.ingest.sources.http import ConnectorConfig, HttpSource, Page, SourceError
from services.ingest.sources.text import html_to_text
from shared.events import RawMention

HTTP_URL = r"^https?://[^/\s]+"  # base URLs: a scheme and a host at least
API = "https://hn.algolia.com/api/v1"
HITS_PER_PAGE_MAX = 1000  # Algolia's cap for the HN index
ITEM_URL = "https://news.ycombinator.com/item?id="


class HackerNewsConfig(ConnectorConfig):
    # The API's base URL (a mirror, or a test server).
    base_url: str = Field(default=API, pattern=HTTP_URL)
    # What to search for; None = the brand's keywords.
    keywords: list[str] | None = None
    # Algolia tags: stories and comments (polls, jobs and the rest are not conversations).
    tags: str = "(story,comment)"
    hits_per_page: int = Field(default=100, ge=1, le=HITS_PER_PAGE_MAX)


def _token(direction: str, page: int, until: int | None) -> str:
    return f"{direction}:{page}:{'' if until is None else until}"


def _parse_token(token: str) -> tuple[str, int, int | None]:
    direction, _, rest = token.partition(":")
    page, _, until = rest.partition(":")
    try:
        if direction not in ("older", "newer"):
            raise ValueError(direction)
        return direction, int(page), int(until) if until else None
    except ValueError:
        raise SourceError(f"not a page token of this source: {token!r}") from None


def _at(hit: Any) -> int:
    value = hit.get("created_at_i") if isinstance(hit, dict) else None
    return value if isinstance(value, int) else 0


def _newest(hits: list[dict[str, Any]]) -> dict[str, Any] | None:
    """{"t": newest created_at_i, "ids": [objectIDs at that second]} of well-formed hits."""
    stamped = [h for h in hits if _at(h) and _id(h)]
    if not stamped:
        return None
    t = max(_at(h) for h in stamped)
    return {"t": t, "ids": sorted(str(_id(h)) for h in stamped if _at(h) == t)}


def _id(hit: Any) -> str | None:
    return str(hit["objectID"]) if isinstance(hit, dict) and hit.get("objectID") else None


def _later(a: dict[str, Any] | None, b: dict[str, Any] | None) -> dict[str, Any] | None:
    """The later of two cursor marks (the ids of one second merged)."""
    if a is None or b is None:
        return a or b
    if a["t"] != b["t"]:
        return a if a["t"] > b["t"] else b
    return {"t": a["t"], "ids": sorted(set(a["ids"]) | set(b["ids"]))}


class HackerNewsSource(HttpSource):
    type = "hackernews"
    fingerprint_fields = ("objectID",)
    Config: ClassVar[type[ConnectorConfig]] = HackerNewsConfig
    config: HackerNewsConfig

    @property
    def api(self) -> str:
        return self.config.base_url.rstrip("/")

    @property
    def keywords(self) -> list[str]:
        return self.config.keywords if self.config.keywords is not None else self.brand.keywords

    def feeds(self) -> Sequence[str]:
        return [f"search:{k}" for k in self.keywords]

    # -- fetching --

    async def fetch_page(self, feed: str, cursor: Any, page_token: str | None) -> Page:
        kind, _, query = feed.partition(":")
        if kind != "search" or not query:
            raise ValueError(f"unknown feed {feed!r}")
        mark = {"t": cursor["t"], "ids": list(cursor.get("ids", []))} if cursor else None
        walk = cursor.get("walk") if cursor else None
        if page_token is not None:
            direction, page, until = _parse_token(page_token)
        elif walk:  # a walk that a restart (or max_pages_per_poll) cut short goes on
            direction, page, until = "newer", int(walk["page"]), walk.get("until")
        else:
            direction, page, until = ("newer" if mark else "older"), 0, None
        since = mark if direction == "newer" else None

        filters = []
        if since is not None:
            filters.append(f"created_at_i>={since['t']}")
        if until is not None:
            filters.append(f"created_at_i<={until}")
        params: list[tuple[str, Any]] = [
            ("query", query),
            ("tags", self.config.tags),
            ("hitsPerPage", self.config.hits_per_page),
            ("page", page),
        ]
        if filters:
            params.append(("numericFilters", ",".join(filters)))
        data, _ = await self.get_json(f"{self.api}/search_by_date", params=params)
        if not isinstance(data, dict) or not isinstance(data.get("hits"), list):
            raise SourceError(f"{feed}: expected an object with 'hits', got {type(data).__name__}")
        hits: list[Any] = data["hits"]
        pages = data.get("nbPages") if isinstance(data.get("nbPages"), int) else 0
        more = page + 1 < pages and bool(hits)
        top = _newest([h for h in hits if isinstance(h, dict)])
        if until is None and top is not None:
            until = top["t"]  # later pages stay below the first page's newest hit

        next_token = older_token = None
        if since is None:  # the first poll, backfill: the newest hits, then older pages
            new_cursor = _later(mark, top)
            older_token = _token("older", page + 1, until) if more else None
        else:
            done = set(since["ids"])  # the hits of the cursor's second were published
            hits = [h for h in hits if not (_at(h) == since["t"] and _id(h) in done)]
            newest = _later(walk.get("newest") if walk else None, top)
            if more:
                next_token = _token("newer", page + 1, until)
                walk = {"page": page + 1, "until": until, "newest": newest}
                new_cursor = {"t": since["t"], "ids": since["ids"], "walk": walk}
            else:
                new_cursor = _later(since, newest)
        hits.sort(key=_at)  # oldest first: stories before their comments
        return Page(hits, cursor=new_cursor, next_token=next_token, older_token=older_token)

    # -- mapping --

    def to_mention(self, item: Any) -> RawMention | None:
        if not isinstance(item, dict):
            raise ValueError(f"expected a search hit, got {type(item).__name__}")
        for key in ("objectID", "created_at", "author"):
            if item.get(key) in (None, ""):
                raise ValueError(f"hit lacks {key!r}")
        tags = item.get("_tags") or []
        oid = str(item["objectID"])
        story_id = item.get("story_id")
        parent = item.get("parent_id")
        if "comment" in tags or item.get("comment_text") is not None:
            kind = "comment"
            text = html_to_text(str(item.get("comment_text") or ""))
            root = str(story_id) if story_id is not None else str(parent or oid)
            in_reply_to = str(parent) if parent is not None else None
        else:
            kind = "story"
            title = str(item.get("title") or "").strip()
            body = html_to_text(str(item.get("story_text") or ""))
            text = f"{title}\n\n{body}".strip() if body else title
            root, in_reply_to = oid, None
        if not text:
            raise ValueError(f"{kind} {oid} has no text")
        author = str(item["author"])
        return self.mention(
            item,
            author_id=author,
            handle=author,
            text=text,
            created_at=item["created_at"],
            url=f"{ITEM_URL}{oid}",
            in_reply_to=in_reply_to,
            root=root,
            metadata={
                "hackernews": {
                    "type": kind,
                    "story_id": str(story_id) if story_id is not None else None,
                    "story_title": item.get("story_title"),
                    "link": item.get("url") or item.get("story_url"),
                    "points": item.get("points"),
                    "num_comments": item.get("num_comments"),
                }
            },
        )
