"""The RSS/Atom connector against a real HTTP server on 127.0.0.1 serving feed documents."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest

from services.ingest.poller import Poller
from services.ingest.sources.http import SourceError
from services.ingest.sources.rss import RssSource
from shared.events import DeadLetter
from tests.ingest import fixture_server as fx
from tests.ingest.helpers import at_least, consume, consume_topic, parse
from tests.ingest.rss_server import RssServer, atom_entry

BRAND = fx.acme("rss", "Acme Support", "bigcorp")
DANA = "https://reviews.example/reviews/1001"


@pytest.fixture
def rss_server() -> Iterator[RssServer]:
    yield from fx.served(RssServer.with_fixtures())


def rss(server: RssServer, *paths: str, name: str = "feeds", **settings: Any) -> RssSource:
    feeds = [server.feed_url(p) for p in paths or ("/reviews.rss", "/forum.atom")]
    return fx.make_source(RssSource, BRAND, name, feeds=feeds, **settings)


def title(item: dict[str, Any]) -> str:
    return str(item["entry"].get("title", ""))


async def test_maps_rss_and_atom_entries_with_threads_brand_and_vip(
    rss_server: RssServer,
) -> None:
    source = rss(rss_server)
    reviews = await source.fetch_page(source.config.feeds[0], None, None)
    mapped = fx.map_items(source, reviews.items, title)
    got = mapped.mentions

    # Two malformed items: no guid and no link; nothing but an empty title and description.
    assert mapped.errors == {
        "Great value": "entry has neither an id (guid) nor a link",
        "": "entry has no text (no title, summary or content)",
    }
    assert sorted(got) == sorted(
        [DANA, "https://reviews.example/reviews/1003", "reviews.example:reply:1001"]
    )
    dana = got[DANA]
    assert dana.source == "rss" and dana.brand == "acme" and dana.event_id
    assert dana.text == (
        "Router died, support never called back\n\n"
        "The router died on Monday.\nSupport promised a call & never called back.\n\n1 star."
    )
    assert dana.author.handle == "Dana K" and dana.author.id == "Dana K"
    assert not dana.is_brand and not dana.author.vip
    assert dana.url == DANA and dana.metadata["lang"] == "en-us"
    assert str(dana.created_at) == "2026-11-27 09:00:00+00:00"
    assert dana.metadata["rss"]["tags"] == ["internet"]
    # The brand's answer (RFC 4685 thr:in-reply-to) joins Dana's conversation.
    answer = got["reviews.example:reply:1001"]
    assert answer.is_brand and answer.in_reply_to == DANA
    assert answer.conversation_id == dana.conversation_id == f"rss:{DANA}"
    # No guid: the link identifies the entry; bigcorp is a VIP of the brand.
    assert got["https://reviews.example/reviews/1003"].author.vip
    assert got["https://reviews.example/reviews/1003"].text.endswith(
        "down & nobody answers the phone."
    )
    # Oldest first: parents before replies.
    assert [i["key"] for i in reviews.items][-1] == "reviews.example:reply:1001"

    forum = await source.fetch_page(source.config.feeds[1], None, None)
    forum_mapped = fx.map_items(source, forum.items, title)
    posts = forum_mapped.mentions
    assert forum_mapped.errors == {}
    giulia = posts["urn:forum.example:post:501"]
    assert (
        giulia.text
        == "Fibra down a Milano\n\nLa fibra non funziona da tre giorni,\nvoglio un rimborso!"
    )
    assert giulia.metadata["lang"] == "it" and giulia.author.handle == "giulia"
    assert giulia.url == "https://forum.example/t/501"
    reply = posts["urn:forum.example:post:502"]
    assert reply.is_brand and reply.in_reply_to == giulia.external_id
    assert reply.conversation_id == giulia.conversation_id
    assert str(reply.created_at) == "2026-11-27 09:00:00+00:00"  # 10:00+01:00
    assert forum_mapped.skipped == ["Ich habe seit Tagen kein Internet"]  # German
    german = source.to_mention(forum.items[-1])
    assert german is not None and german.metadata["lang"] == "de"
    assert forum.cursor["etag"] and forum.cursor["modified"] == "Fri, 27 Nov 2026 09:40:00 GMT"
    assert set(forum.cursor["seen"]) == {f"urn:forum.example:post:{n}" for n in (501, 502, 503)}
    assert forum.cursor["newest"] == "2026-11-27T10:05:00+00:00"
    await source.aclose()


async def test_poll_dead_letters_then_asks_conditionally_and_takes_only_new_entries(
    rss_server: RssServer, ingest: fx.Ingest
) -> None:
    p = ingest.poller(source := rss(rss_server))
    report = await p.poll_once()
    # reviews: 3 published, 2 malformed; forum: 2 published, the German post filtered
    assert (report.published, report.filtered, len(report.dead)) == (5, 1, 2)
    records = await consume(ingest.settings, at_least(5))
    assert sorted(parse(r).external_id for r in records) == sorted(
        [
            DANA,
            "https://reviews.example/reviews/1003",
            "reviews.example:reply:1001",
            "urn:forum.example:post:501",
            "urn:forum.example:post:502",
        ]
    )
    letters = await consume_topic(ingest.settings, ingest.settings.topic_dlq, at_least(2))
    dead = [DeadLetter.model_validate_json(r.value) for r in letters]
    assert {d.stage for d in dead} == {"ingest:feeds"}
    assert any("neither an id (guid) nor a link" in d.reason for d in dead)
    originals = [json.loads(base64.b64decode(d.original_b64)) for d in dead]
    assert {o["entry"]["author"] for o in originals} == {"nolink", "empty"}

    saved = await ingest.cursor("feeds")
    assert set(saved) == set(source.config.feeds)

    # Unchanged feeds: the ETags go back, both answer 304, nothing moves.
    again = await p.poll_once()
    assert (again.published, again.duplicates, len(again.dead)) == (0, 0, 0)
    last = rss_server.paths("/reviews.rss")[-1]
    assert last.headers["if-none-match"] == saved[source.config.feeds[0]]["etag"]
    assert last.headers["if-modified-since"] == "Fri, 27 Nov 2026 09:40:00 GMT"
    assert await ingest.cursor("feeds") == saved

    # A new review: only it is taken (the malformed ones are remembered, not re-sent).
    doc = rss_server.docs["/reviews.rss"].decode()
    new_item = (
        "<item><title>Fixed, thanks</title><link>https://reviews.example/reviews/1005</link>"
        "<dc:creator>Dana K</dc:creator><pubDate>Fri, 27 Nov 2026 11:00:00 GMT</pubDate>"
        "<description>Line back up.</description></item>"
    )
    rss_server.docs["/reviews.rss"] = doc.replace("<item>", new_item + "<item>", 1).encode()
    third = await p.poll_once()
    assert (third.published, third.duplicates, len(third.dead)) == (1, 0, 0)
    assert [m.external_id for m in third.mentions] == ["https://reviews.example/reviews/1005"]
    cursor = (await ingest.cursor("feeds"))[source.config.feeds[0]]
    assert cursor["etag"] != saved[source.config.feeds[0]]["etag"]
    assert cursor["newest"] == "2026-11-27T11:00:00+00:00"
    await source.aclose()


async def test_paging_and_a_restart_midway_lose_and_repeat_nothing(
    rss_server: RssServer, ingest: fx.Ingest
) -> None:
    def at(n: int) -> str:
        return f"2026-11-27T{n:02d}:00:00Z"

    rss_server.paged = [atom_entry(n, at(n)) for n in (2, 1)]  # newest first, 3 a page
    first = rss(rss_server, "/paged.atom")
    assert (await ingest.poller(first).poll_once()).published == 2

    # Seven new entries: pages [9 8 7] [6 5 4] [3 2 1]; polls must walk back to 3.
    rss_server.paged = [atom_entry(n, at(n)) for n in range(9, 0, -1)]
    # A crashes after the first page [9 8 7]; another entry then shifts the pages to
    # [10 9 8] [7 6 5] [4 3 2] [1]; B publishes 10 and loses its save; C starts from A's
    # cursor: 10 again (deduped), then on with A's walk, down to 3.
    [feed] = first.config.feeds
    run = await ingest.restart_midway(
        lambda: rss(rss_server, "/paged.atom"),
        between=lambda: rss_server.paged.insert(0, atom_entry(10, at(10))),
    )
    assert run.after_a[feed]["gap"] == f"{feed}?page=2"  # the walk's next page
    assert run.after_b == run.after_a
    assert (run.report.published, run.report.duplicates) == (4, 1)
    assert "gap" not in run.after_c[feed]
    assert run.after_c[feed]["newest"] == "2026-11-27T10:00:00+00:00"

    records = await consume(ingest.settings, at_least(10))
    ids = sorted(int(parse(r).external_id.rsplit(":", 1)[1]) for r in records)
    assert ids == list(range(1, 11))  # every entry exactly once
    pages = [r.arg("page", "1") for r in rss_server.paths("/paged.atom")]
    assert pages == ["1", "1", "1", "1", "2", "3"]


async def test_429_with_retry_after_and_500_are_retried(rss_server: RssServer) -> None:
    source = rss(rss_server)
    [reviews, _] = source.config.feeds
    page = await fx.fetch_after_429_and_500(rss_server, source, reviews, "/reviews.rss")
    assert len(page.items) == 5 and source.health.requests == 3
    await fx.give_up_when_down(rss_server, source, reviews)
    await source.aclose()


async def test_a_document_that_is_no_feed_fails_its_poll_and_is_polled_last(
    rss_server: RssServer,
) -> None:
    source = rss(rss_server, "/not-a-feed", "/reviews.rss")
    broken, reviews = source.config.feeds
    polled: list[str] = []
    poller = Poller(source)

    with pytest.raises(SourceError, match="is not an RSS or Atom feed \\(text/html"):
        await poller.poll_once(dry_run=True, on_page=lambda feed, *_: polled.append(feed))
    assert polled == [] and list(source.feeds()) == [reviews, broken]
    with pytest.raises(SourceError, match="not-a-feed"):
        await poller.poll_once(dry_run=True, on_page=lambda feed, *_: polled.append(feed))
    assert polled == [reviews]  # the healthy feed was polled before the broken one failed

    rss_server.docs["/not-a-feed"] = rss_server.docs["/reviews.rss"]  # fixed
    report = await poller.poll_once(dry_run=True)
    assert len(report.mentions) == 6 and list(source.feeds()) == [broken, reviews]
    await source.aclose()
