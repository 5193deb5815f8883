"""A real HTTP server on 127.0.0.1 serving RSS 2.0 and Atom feeds (see fixtures/rss).

It behaves like a feed host: an ``ETag`` (a digest of the document) and ``Last-Modified``
on every feed, and ``304 Not Modified`` (no body) when ``If-None-Match`` names the current
ETag or, without one, ``If-Modified-Since`` is not older than ``Last-Modified``
(RFC 9110 §13.1). ``/paged.atom`` is an RFC 5005 paged feed generated from ``paged``
(newest first, ``page_size`` entries a page, ``?page=N`` and ``<link rel="next">``);
``/not-a-feed`` is an HTML page.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from tests.ingest.fixture_server import FIXTURES, Answer, FixtureServer, Request

LAST_MODIFIED = "Fri, 27 Nov 2026 09:40:00 GMT"
TYPES = {".rss": "application/rss+xml", ".atom": "application/atom+xml"}


def fixture_bytes(name: str) -> bytes:
    return (FIXTURES / "rss" / name).read_bytes()


def atom_entry(n: int, published: str, **changes: Any) -> dict[str, Any]:
    """An entry of the generated paged feed."""
    entry = {
        "id": f"urn:forum.example:post:{n}",
        "title": f"Outage report {n}",
        "summary": f"<p>Acme line down again ({n})</p>",
        "author": f"user{n}",
        "published": published,
    }
    entry.update(changes)
    return entry


def atom_feed(entries: list[dict[str, Any]], self_href: str, next_href: str | None) -> bytes:
    parts = [
        '<?xml version="1.0" encoding="utf-8"?>',
        '<feed xmlns="http://www.w3.org/2005/Atom" xml:lang="en">',
        "<title>Acme forum (paged)</title>",
        "<id>urn:forum.example:paged</id>",
        f"<updated>{entries[0]['published'] if entries else '2026-11-27T00:00:00Z'}</updated>",
        f'<link rel="self" href={quoteattr(self_href)}/>',
    ]
    if next_href:
        parts.append(f'<link rel="next" href={quoteattr(next_href)}/>')
    for e in entries:
        parts += [
            "<entry>",
            f"<id>{escape(e['id'])}</id>",
            f"<title>{escape(e['title'])}</title>",
            f"<link href={quoteattr('https://forum.example/p/' + e['id'].rsplit(':', 1)[1])}/>",
            f"<published>{e['published']}</published>",
            f"<updated>{e['published']}</updated>",
            f"<author><name>{escape(e['author'])}</name></author>",
            f'<summary type="html">{escape(e["summary"])}</summary>',
            "</entry>",
        ]
    parts.append("</feed>")
    return "\n".join(parts).encode()


@dataclass
class RssServer(FixtureServer):
    # path -> document (bytes); the Content-Type comes from the path's suffix
    docs: dict[str, bytes] = field(default_factory=dict)
    paged: list[dict[str, Any]] = field(default_factory=list)
    page_size: int = 3
    last_modified: str = LAST_MODIFIED

    @classmethod
    def with_fixtures(cls) -> RssServer:
        return cls(
            docs={
                "/reviews.rss": fixture_bytes("reviews.rss"),
                "/forum.atom": fixture_bytes("forum.atom"),
                "/not-a-feed": b"<!doctype html><html><body><h1>Welcome!</h1></body></html>",
            }
        )

    def feed_url(self, path: str) -> str:
        return f"{self.url}{path}"

    def answer(self, request: Request) -> Answer:
        path = request.path
        if path == "/paged.atom":
            page = int(request.arg("page", "1") or 1)
            size = self.page_size
            entries = self.paged[(page - 1) * size : page * size]
            more = len(self.paged) > page * size
            base = self.feed_url(path)
            body = atom_feed(entries, base, f"{base}?page={page + 1}" if more else None)
        elif path in self.docs:
            body = self.docs[path]
        else:
            return 404, {"Content-Type": "text/plain"}, b"Not Found"
        ctype = TYPES.get(Path(path).suffix, "text/html; charset=utf-8")
        etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
        headers = {"Content-Type": ctype, "ETag": etag, "Last-Modified": self.last_modified}
        if self._not_modified(request, etag):
            return 304, {"ETag": etag, "Last-Modified": self.last_modified}, b""
        return 200, headers, body

    def _not_modified(self, request: Request, etag: str) -> bool:
        match = request.headers.get("if-none-match")
        if match is not None:  # If-None-Match wins over If-Modified-Since (RFC 9110 §13.2.2)
            return etag in [m.strip() for m in match.split(",")]
        since = request.headers.get("if-modified-since")
        if since is None:
            return False
        try:
            return parsedate_to_datetime(since) >= parsedate_to_datetime(self.last_modified)
        except (TypeError, ValueError):
            return False
