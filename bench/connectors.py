"""Connector overhead per page (`bench/connectors`): one page of items from a loopback server.

For each connector type, the test suite's fixture server (tests/ingest/*_server.py: a real
``http.server`` on 127.0.0.1 answering with the documented payload shapes) holds one feed
of at least 100 copies of a fixture item, and the connector reads its first page, as a
poll does, again and again:

- ``fetch_page``: the request through ``HttpSource.request`` (retry policy, quota headers,
  health) and the connector's parsing, threading and cursor work;
- ``to_mention``: mapping every item of the page to the contract (validated RawMention);
- ``raw GET``: the same request (path, query, headers) replayed with a bare httpx client:
  what loopback, the fixture server and reading the body cost anyway.

Overhead = fetch_page - raw GET + to_mention: what the connector adds per page. Pages
hold 100 items, but Mastodon's, whose API allows 40 at most.

    .venv/bin/python -m bench.connectors --pages 200

Prints p50/p95 per connector; writes bench/results/connectors.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
from rich.console import Console
from rich.table import Table

from services.ingest.sources.http import HttpSource
from tests.ingest.fixture_server import FixtureServer, acme, make_source

console = Console(width=120)
ITEMS = 100
X_TOKEN_ENV = "THIRDRING_BENCH_X_TOKEN"
REPLAYED_HEADERS = ("authorization", "user-agent")


@dataclass
class Scenario:
    """A fixture server holding one feed of ``ITEMS`` items, and the source that reads it."""

    server: FixtureServer
    source: HttpSource
    feed: str


def _mastodon() -> Scenario:
    from services.ingest.sources.mastodon import MastodonSource
    from tests.ingest.mastodon_server import MastodonServer

    server = MastodonServer.with_fixtures().start()
    template = next(
        s for s in server.statuses.values() if not s.get("in_reply_to_id") and s.get("tags")
    )
    for i in range(ITEMS):
        server.add_status(template, str(200000000000000000 + i))
    tag = template["tags"][0]["name"]
    brand = acme("mastodon", "@acme@mastodon.social", "@bigcorp@mastodon.social")
    source = make_source(MastodonSource, brand, "bench", instance=server.url, brand_replies=False)
    return Scenario(server, source, f"tag:{tag}")


def _rss() -> Scenario:
    from services.ingest.sources.rss import RssSource
    from tests.ingest.rss_server import RssServer, atom_entry

    server = RssServer(page_size=ITEMS).start()
    server.paged = [
        atom_entry(n, f"2026-11-27T{n // 60:02d}:{n % 60:02d}:00Z") for n in range(ITEMS, 0, -1)
    ]
    feed = f"{server.url}/paged.atom"
    source = make_source(RssSource, acme("rss", "Acme Support", "bigcorp"), "bench", feeds=[feed])
    return Scenario(server, source, feed)


def _hackernews() -> Scenario:
    from services.ingest.sources.hackernews import HackerNewsSource
    from tests.ingest.hackernews_server import HackerNewsServer

    server = HackerNewsServer.with_fixtures().start()
    template = next(h for h in server.hits if h.get("comment_text") and h.get("author"))
    for i in range(ITEMS):
        server.add_comment(template, 47000000 + i, template["created_at_i"] + 3600 + i)
    brand = acme("hackernews", "acme_support", "bigcorp")
    source = make_source(HackerNewsSource, brand, "bench", base_url=server.api, hits_per_page=ITEMS)
    return Scenario(server, source, f"search:{brand.keywords[0]}")


def _x() -> Scenario:
    from services.ingest.sources.x import XSource
    from tests.ingest.x_server import XServer

    server = XServer.with_fixtures().start()
    os.environ[X_TOKEN_ENV] = server.token
    template = next(p for p in server.search if "created_at" in p and "referenced_tweets" not in p)
    for i in range(ITEMS):
        server.add_post(template, str(1861800000000100000 + i))
    source = make_source(
        XSource,
        acme("x", "acme", "bigcorp_it"),
        "bench",
        base_url=server.url,
        token_env=X_TOKEN_ENV,
        max_results=ITEMS,
        mentions=False,
    )
    return Scenario(server, source, "search")


def _bluesky() -> Scenario:
    from services.ingest.sources.bluesky import BlueskySource
    from tests.ingest.bluesky_server import BlueskyServer

    server = BlueskyServer.with_fixtures().start()
    brand = acme("bluesky", "acme.bsky.social", "bigcorp.bsky.social")
    keyword = brand.keywords[0]
    template = next(
        p
        for p in server.posts.values()
        if keyword in p["record"]["text"].lower() and not p["record"].get("reply")
    )
    for i in range(ITEMS):
        server.add_post(template, f"3mdqbench{i:04d}", f"2026-11-27T12:{i // 60:02d}:{i % 60:02d}Z")
    source = make_source(BlueskySource, brand, "bench", service=server.url)
    return Scenario(server, source, f"search:{keyword}")


def _reddit() -> Scenario:
    from services.ingest.sources.reddit import RedditSource
    from tests.ingest.reddit_server import RedditServer

    server = RedditServer.with_fixtures().start()
    template = next(
        t
        for t in server.things.values()
        if t["kind"] == "t3"
        and isinstance(t["data"].get("created_utc"), int | float)
        and "[" not in t["data"]["author"] + t["data"].get("selftext", "")  # not [deleted]
    )
    sub = template["data"]["subreddit"]
    base = template["data"]["created_utc"] + 3600
    for i in range(ITEMS):
        server.add(template, f"bench{i:04d}", base + i)
    brand = acme("reddit", "acme_official", "bigcorp")
    settings = {"subreddits": [f"r/{sub}"], "contact": "acme_ops"}
    source = make_source(RedditSource, brand, "bench", base_url=server.url, **settings)
    return Scenario(server, source, f"new:{sub}")


SCENARIOS: dict[str, Callable[[], Scenario]] = {
    "mastodon": _mastodon,
    "rss": _rss,
    "hackernews": _hackernews,
    "x": _x,
    "bluesky": _bluesky,
    "reddit": _reddit,
}


def fresh_quota(server: FixtureServer) -> None:
    """The fixture servers count requests for their quota headers (X-RateLimit-Remaining
    and the like); start the count again so that the quota never runs out: this measures
    pages, not quota waits."""
    with server._lock:
        server.requests.clear()
        if hasattr(server, "_calls"):
            server._calls = 0


def _ms(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50_ms": statistics.median(ordered) * 1000,
        "p95_ms": ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))] * 1000,
    }


async def measure(scenario: Scenario, pages: int, warmup: int = 5) -> dict[str, Any]:
    source, server, feed = scenario.source, scenario.server, scenario.feed
    fetch: list[float] = []
    mapping: list[float] = []
    raw: list[float] = []
    items = mapped = 0
    async with httpx.AsyncClient() as bare:
        for n in range(warmup + pages):
            start = time.perf_counter()
            page = await source.fetch_page(feed, None, None)
            fetched = time.perf_counter()
            mentions = [source.to_mention(item) for item in page.items]
            done = time.perf_counter()
            last = server.requests[-1]
            query = urlencode([(k, v) for k, vs in last.query.items() for v in vs])
            headers = {k: v for k, v in last.headers.items() if k in REPLAYED_HEADERS}
            raw_start = time.perf_counter()
            response = await bare.get(f"{server.url}{last.path}?{query}", headers=headers)
            response.read()
            raw_done = time.perf_counter()
            if response.status_code != 200:
                raise RuntimeError(f"replayed request answered {response.status_code}")
            fresh_quota(server)
            if n >= warmup:
                fetch.append(fetched - start)
                mapping.append(done - fetched)
                raw.append(raw_done - raw_start)
            items = len(page.items)
            mapped = sum(m is not None for m in mentions)
    await source.aclose()
    result: dict[str, Any] = {"feed": feed, "items_per_page": items, "mapped": mapped}
    for name, values in (("fetch_page", fetch), ("to_mention", mapping), ("raw_get", raw)):
        result[name] = _ms(values)
    overhead = [f - r + m for f, r, m in zip(fetch, raw, mapping, strict=True)]
    result["overhead"] = _ms(overhead)
    result["overhead_us_per_item"] = result["overhead"]["p50_ms"] * 1000 / max(items, 1)
    return result


async def run(pages: int, only: list[str] | None) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for name, build in SCENARIOS.items():
        if only and name not in only:
            continue
        try:
            scenario = build()
        except ImportError as exc:  # a connector this checkout does not have
            results[name] = {"error": f"not available: {exc}"}
            continue
        except Exception as exc:  # its fixture server changed shape: say so, measure the rest
            results[name] = {"error": f"no scenario: {type(exc).__name__}: {exc}"}
            continue
        try:
            results[name] = await measure(scenario, pages)
        except Exception as exc:
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
        finally:
            scenario.server.stop()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pages", type=int, default=200, help="pages timed per connector")
    parser.add_argument("--only", nargs="*", choices=sorted(SCENARIOS), help="connectors")
    args = parser.parse_args()
    results = asyncio.run(run(args.pages, args.only))

    table = Table(title=f"connector overhead per page ({args.pages} pages each, loopback)")
    for column in ("connector", "items", "fetch_page", "to_mention", "raw GET", "overhead"):
        table.add_column(column, justify="left" if column == "connector" else "right")
    table.add_column("µs/item", justify="right")
    for name, r in results.items():
        if "error" in r:
            table.add_row(name, "", "", "", "", r["error"][:60], "")
            continue

        def cell(key: str, r: dict[str, Any] = r) -> str:
            return f"{r[key]['p50_ms']:.2f} / {r[key]['p95_ms']:.2f}"

        table.add_row(
            name,
            str(r["items_per_page"]),
            cell("fetch_page"),
            cell("to_mention"),
            cell("raw_get"),
            cell("overhead"),
            f"{r['overhead_us_per_item']:.0f}",
        )
    console.print(table)
    console.print("ms per page, p50 / p95; overhead = fetch_page - raw GET + to_mention")
    out = Path("bench/results/connectors.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"pages": args.pages, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
