"""RSS and Atom feeds: review sites, alert feeds (Google Alerts, Talkwalker), forums.

One source follows a list of feed URLs (one feed each, with its own cursor); documents are
fetched through ``HttpSource.request`` (so 429/5xx handling applies) and parsed by
feedparser, which reads RSS 0.9x/1.0/2.0 and Atom 0.3/1.0. Documentation followed:

- RSS 2.0: https://www.rssboard.org/rss-specification (``item``, ``guid``, ``pubDate``,
  ``language``);
- Atom 1.0, RFC 4287: https://www.rfc-editor.org/rfc/rfc4287 (``entry``, ``id``,
  ``published``/``updated``, ``xml:lang``);
- feedparser's entry fields and its conditional GET (``etag``/``modified``):
  https://feedparser.readthedocs.io/en/latest/http-etag.html;
- conditional requests, RFC 9110 §13.1 (``If-None-Match``, ``If-Modified-Since``, 304);
- paged feeds, RFC 5005 §3: a ``<link rel="next">`` to the older entries;
- threads in feeds, RFC 4685: ``<thr:in-reply-to ref="…">`` (forums).

Cursor, per feed: the ``ETag`` and ``Last-Modified`` of the last document (sent back as
``If-None-Match``/``If-Modified-Since``: a 304 yields nothing and keeps the cursor), the
keys of recent entries (``seen``: every entry of the last document, at least, and up to
``remember``), the newest entry time seen, and while older pages are walked, the page to
go on from (``gap``). An entry is new when its key (``id``/``guid``, else its link) is
not in ``seen``; an unseen entry published more than ``late_hours`` before the newest one
is taken for one that fell out of ``seen`` and is skipped, so a restart neither loses nor
repeats entries.

Paging: a feed that pages (RFC 5005) gives its ``rel="next"`` link as the older page (the
first poll with ``initial_pages`` > 1 and backfill walk it). When the oldest entry of the
newest document is new, the entries between it and the last poll may be on the next page:
the poll follows the pages until one ends with an entry already seen.

A feed that answers with something that is not a feed (an HTML error page) fails the poll
with the reason; a feed that failed is polled last until it works again, so it holds up
none of the others.
"""

from __future__ import annotations

import calendar
import hashlib
import io
import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar
from urllib.parse import urlsplit

import feedparser
from pydantic import Field, field_validator

from services.ingest.listening import Brand, SourceSpec
from services.ingest.sources.http import ConnectorConfig, HttpSource, Page, SourceError
from services.ingest.sources.text import html_to_text
from services.ingest.threads import ThreadIndex
from shared.events import RawMention, utcnow

log = logging.getLogger(__name__)

MAX_EXTERNAL_ID = 256


class RssConfig(ConnectorConfig):
    # The feeds' URLs (RSS or Atom; each one is a feed with its own cursor).
    feeds: list[str] = Field(min_length=1)
    # Only entries that mention one of these (case-insensitive); None: every entry (review
    # and alert feeds are about the brand already).
    keywords: list[str] | None = None
    # Keys of recent entries kept per feed (at least every entry of the last document).
    remember: int = Field(default=500, ge=10, le=10_000)
    # An unseen entry this much older than the newest seen is taken for a forgotten one.
    late_hours: float = Field(default=72.0, gt=0)

    @field_validator("feeds")
    @classmethod
    def _feeds(cls, v: list[str]) -> list[str]:
        out: list[str] = []
        for url in v:
            url = url.strip()
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError(f"not a feed URL: {url!r} (http:// or https://)")
            if url not in out:
                out.append(url)
        return out


def _iso(value: Any) -> str | None:
    """feedparser's ``*_parsed`` (a UTC struct_time) as an ISO 8601 string."""
    if value is None:
        return None
    try:
        return datetime.fromtimestamp(calendar.timegm(value), UTC).isoformat()
    except (TypeError, ValueError, OverflowError):
        return None


def _plain(value: Any) -> Any:
    """A feedparser value as JSON (the dead-letter topic keeps the item's original)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if not k.endswith("_parsed")}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


def _digest(*parts: Any) -> str:
    return "sha256:" + hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).hexdigest()


def _entry_key(entry: dict[str, Any]) -> str:
    """What identifies an entry: its id (guid), else its link; else (a malformed entry,
    dead-lettered) a digest of its content, so it is dead-lettered once, not every poll."""
    key = str(entry.get("id") or entry.get("link") or "").strip()
    if key:
        return key
    return _digest(entry.get("title"), entry.get("summary"), entry.get("published"))


def _text_of(detail: Any, value: Any) -> str:
    if not value:
        return ""
    kind = detail.get("type", "") if isinstance(detail, dict) else ""
    return str(value).strip() if kind == "text/plain" else html_to_text(str(value))


class RssSource(HttpSource):
    type = "rss"
    fingerprint_fields = ("id",)
    Config: ClassVar[type[ConnectorConfig]] = RssConfig
    config: RssConfig

    def __init__(self, spec: SourceSpec, brand: Brand, **kwargs: Any) -> None:
        super().__init__(spec, brand, **kwargs)
        self.threads = ThreadIndex()
        self._failing: set[str] = set()
        self._keywords = [k.lower() for k in self.config.keywords or []]

    def feeds(self) -> Sequence[str]:
        # A feed that failed goes last: it fails the poll after the others were polled.
        return sorted(self.config.feeds, key=lambda f: f in self._failing)

    # -- fetching --

    async def fetch_page(self, feed: str, cursor: Any, page_token: str | None) -> Page:
        try:
            page = await self._fetch(feed, cursor if isinstance(cursor, dict) else None, page_token)
        except Exception:
            self._failing.add(feed)
            raise
        self._failing.discard(feed)
        return page

    async def _fetch(self, feed: str, cursor: dict[str, Any] | None, token: str | None) -> Page:
        url = token or feed
        if token is not None and urlsplit(token).netloc != urlsplit(feed).netloc:
            raise SourceError(f"refusing a page link off {urlsplit(feed).netloc}: {token}")
        headers: dict[str, str] = {}
        if token is None and cursor:
            if cursor.get("etag"):
                headers["If-None-Match"] = cursor["etag"]
            if cursor.get("modified"):
                headers["If-Modified-Since"] = cursor["modified"]
        response = await self.request("GET", url, headers=headers)
        if response.status_code == 304:  # not modified: nothing new, the cursor stays
            return Page([], cursor=None, next_token=cursor.get("gap") if cursor else None)

        ctype = response.headers.get("content-type", "")
        parsed = feedparser.parse(
            io.BytesIO(response.content),  # bytes, never a name feedparser would open
            response_headers={
                "content-location": str(response.url),
                "content-type": ctype,
                "content-language": response.headers.get("content-language", ""),
            },
        )
        if not parsed.get("version"):
            reason = parsed.get("bozo_exception") or "no <rss>, <feed> or <rdf:RDF> element"
            raise SourceError(f"{url} is not an RSS or Atom feed ({ctype or 'no type'}): {reason}")

        seen: list[str] = list(cursor.get("seen", [])) if cursor else []
        known = set(seen)
        newest = _when(cursor.get("newest")) if cursor else None
        floor = newest - timedelta(hours=self.config.late_hours) if newest else None
        language = parsed.feed.get("language")
        items: list[dict[str, Any]] = []
        keys: list[str] = []
        times: list[datetime] = []
        for entry in parsed.entries:
            item = self._item(feed, entry, language)
            key = item["key"]
            keys.append(key)
            when = None if item["undated"] else _when(item["published_at"])
            if when is not None:
                times.append(when)
            if key in known:
                continue
            if floor is not None and when is not None and when < floor:
                log.debug("source %s: %s: skipping %s, older than the newest", self.name, feed, key)
                continue
            items.append(item)

        # The oldest entry of the page is new and there is an older page: the entries since
        # the last poll may go on there (paging by number shifts, so one seen entry at the
        # top of a page does not mean the rest were seen).
        older = _link(parsed.feed, "next")
        gap = older if cursor and older and keys and keys[-1] not in known else None
        if token is None and gap is None and cursor:
            gap = cursor.get("gap")  # a walk a restart cut short goes on
        bound = max(self.config.remember, len(keys))
        new_seen = list(dict.fromkeys([*keys, *seen]))[:bound]
        newest = max([t for t in (newest, *times) if t is not None], default=None)
        new_cursor: dict[str, Any] = {
            "etag": cursor.get("etag") if cursor else None,
            "modified": cursor.get("modified") if cursor else None,
            "seen": new_seen,
            "newest": newest.isoformat() if newest else None,
        }
        if token is None:
            new_cursor["etag"] = response.headers.get("etag")
            new_cursor["modified"] = response.headers.get("last-modified")
        if gap:
            new_cursor["gap"] = gap

        # Oldest first: parents before replies (feeds list the newest first).
        items.reverse()
        items.sort(key=lambda i: i.get("published_at") or "")
        for item in items:
            parent = item.get("in_reply_to")
            self.threads.add(item["key"], parent)
        return Page(items, cursor=new_cursor, next_token=gap, older_token=older)

    def _item(self, feed: str, entry: Any, language: Any) -> dict[str, Any]:
        plain = _plain(entry)
        key = _entry_key(plain)
        reply = plain.get("thr_in-reply-to")
        published = _iso(entry.get("published_parsed") or entry.get("updated_parsed"))
        lang = None
        for detail in ("summary_detail", "title_detail"):
            d = plain.get(detail)
            if isinstance(d, dict) and d.get("language"):
                lang = d["language"]
                break
        return {
            "feed": feed,
            "key": key,
            # An undated entry (some forums, some alert feeds) dates from when it was seen.
            "published_at": published or utcnow().isoformat(),
            "undated": published is None,
            "lang": lang or language or None,
            "in_reply_to": reply.get("ref") if isinstance(reply, dict) else None,
            "entry": plain,
        }

    # -- mapping --

    def to_mention(self, item: Any) -> RawMention | None:
        if not isinstance(item, dict) or not isinstance(item.get("entry"), dict):
            raise ValueError(f"expected a feed entry, got {type(item).__name__}")
        entry = item["entry"]
        if not (entry.get("id") or entry.get("link")):
            raise ValueError("entry has neither an id (guid) nor a link")
        title = _text_of(entry.get("title_detail"), entry.get("title"))
        summary = _text_of(entry.get("summary_detail"), entry.get("summary"))
        if not summary and entry.get("content"):
            first = entry["content"][0]
            summary = _text_of(first, first.get("value")) if isinstance(first, dict) else ""
        text = title if not summary or summary == title else f"{title}\n\n{summary}".strip()
        if not text:
            raise ValueError("entry has no text (no title, summary or content)")
        if self._keywords and not any(k in text.lower() for k in self._keywords):
            return None  # a forum post about something else
        author = str(entry.get("author") or "").strip()
        host = urlsplit(item["feed"]).netloc
        parent = item.get("in_reply_to")
        key = str(item["key"])
        return self.mention(
            {"id": _external(key)},
            author_id=author or host,
            handle=author or None,
            text=text,
            created_at=item["published_at"],
            url=entry.get("link"),
            in_reply_to=_external(str(parent)) if parent else None,
            root=_external(self.threads.root(key) or key),
            lang=item.get("lang"),
            metadata={
                "rss": {
                    "feed": item["feed"],
                    "id": key,
                    "undated": bool(item.get("undated")),
                    "tags": [t.get("term") for t in entry.get("tags") or [] if isinstance(t, dict)],
                }
            },
        )


def _external(key: str) -> str:
    return key if len(key) <= MAX_EXTERNAL_ID - 16 else _digest(key)


def _when(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        when = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _link(feed: Any, rel: str) -> str | None:
    for link in feed.get("links") or []:
        if link.get("rel") == rel and link.get("href"):
            return str(link["href"])
    return None
