"""The Hacker News connector against a real HTTP server on 127.0.0.1 answering like the
Algolia HN Search API."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest

from services.ingest.sources.hackernews import HackerNewsSource
from services.ingest.sources.http import SourceError
from shared.events import DeadLetter
from tests.ingest import fixture_server as fx
from tests.ingest.hackernews_server import HackerNewsServer
from tests.ingest.helpers import at_least, consume, consume_topic, parse

BRAND = fx.acme("hackernews", "acme_support", "bigcorp")
FEED = "search:acme broadband"
T0 = 1795770000  # 2026-11-27T09:00:00Z, the fixture's first story
NEWEST = {"t": T0 + 25 * 60, "ids": ["46001006"]}


@pytest.fixture
def hn_server() -> Iterator[HackerNewsServer]:
    yield from fx.served(HackerNewsServer.with_fixtures())


def hn(server: HackerNewsServer, **settings: Any) -> HackerNewsSource:
    return fx.make_source(HackerNewsSource, BRAND, "hn", base_url=server.api, **settings)


def comment(server: HackerNewsServer, object_id: int, at: int) -> None:
    template = next(h for h in server.hits if h["objectID"] == "46001001")
    server.add_comment(template, object_id, at)


async def test_maps_stories_and_comments_into_their_story_threads(
    hn_server: HackerNewsServer,
) -> None:
    source = hn(hn_server)
    assert list(source.feeds()) == [FEED]
    page = await source.fetch_page(FEED, None, None)
    assert page.cursor == NEWEST and page.next_token is None and page.older_token is None
    assert [h["objectID"] for h in page.items][:2] == ["46001000", "46001001"]  # oldest first
    [call] = hn_server.paths("/api/v1/search_by_date")
    assert call.query == {
        "query": ["acme broadband"],
        "tags": ["(story,comment)"],
        "hitsPerPage": ["100"],
        "page": ["0"],
    }

    mapped = fx.map_items(source, page.items, lambda hit: str(hit["objectID"]))
    got = mapped.mentions
    assert mapped.errors == {"46001004": "hit lacks 'author'"} and mapped.skipped == []
    assert len(got) == 6

    story = got["46001000"]
    assert story.source == "hackernews" and story.brand == "acme"
    assert story.text == (
        "Acme broadband outage in Milan?\n\nAnyone else? My Acme broadband line has been down "
        'since Monday.\n\nSupport says "no known issues".'
    )
    assert story.author.handle == "dana_k" and story.author.followers is None
    assert story.url == "https://news.ycombinator.com/item?id=46001000"
    assert str(story.created_at) == "2026-11-27 09:00:00+00:00"
    assert story.conversation_id == "hackernews:46001000" and story.in_reply_to is None
    assert story.metadata["hackernews"]["points"] == 12

    complaint, answer = got["46001001"], got["46001002"]
    assert complaint.text == "Same here, Acme broadband down for 3 days.\n\nI want a refund!"
    assert complaint.in_reply_to == "46001000" and not complaint.is_brand
    assert answer.is_brand and answer.in_reply_to == "46001001"
    assert answer.text.startswith("Hi, we're sorry: there is an Acme broadband outage")
    assert {complaint.conversation_id, answer.conversation_id} == {"hackernews:46001000"}
    assert got["46001003"].author.vip and got["46001003"].text.endswith("down since 8am.")
    show = got["46001005"]
    assert show.text == "Show HN: A live map of Acme broadband outages"
    assert show.metadata["hackernews"]["link"] == "https://speedmap.example/acme"
    # A comment on a story this search never returned still joins that story's thread.
    late = got["46001006"]
    assert late.conversation_id == "hackernews:45990000" and late.in_reply_to == "45990010"
    await source.aclose()


async def test_poll_dead_letters_and_goes_on_from_the_cursor_second(
    hn_server: HackerNewsServer, ingest: fx.Ingest
) -> None:
    source = hn(hn_server)
    p = ingest.poller(source)
    report = await p.poll_once()
    assert report.published == 6 and report.dead[0].item["objectID"] == "46001004"
    records = await consume(ingest.settings, at_least(6))
    assert len({parse(r).external_id for r in records}) == 6
    [letter_record] = await consume_topic(ingest.settings, ingest.settings.topic_dlq, at_least(1))
    letter = DeadLetter.model_validate_json(letter_record.value)
    assert letter.stage == "ingest:hn" and "lacks 'author'" in letter.reason
    assert json.loads(base64.b64decode(letter.original_b64))["objectID"] == "46001004"
    assert await ingest.cursor("hn") == {FEED: NEWEST}

    again = await p.poll_once()
    assert (again.published, again.duplicates, len(again.dead)) == (0, 0, 0)
    assert hn_server.paths()[-1].arg("numericFilters") == f"created_at_i>={NEWEST['t']}"

    # A comment in the cursor's very second, and a later one: both new, nothing repeated.
    comment(hn_server, 46001007, NEWEST["t"])
    comment(hn_server, 46001008, NEWEST["t"] + 60)
    third = await p.poll_once()
    assert (third.published, third.duplicates) == (2, 0)
    assert sorted(m.external_id for m in third.mentions) == ["46001007", "46001008"]
    assert await ingest.cursor("hn") == {FEED: {"t": NEWEST["t"] + 60, "ids": ["46001008"]}}
    await source.aclose()


async def test_paging_and_a_restart_midway_lose_and_repeat_nothing(
    hn_server: HackerNewsServer, ingest: fx.Ingest
) -> None:
    cfg = {"hits_per_page": 2}
    first = hn(hn_server, **cfg)
    assert (await ingest.poller(first).poll_once()).published == 2

    # Seven new comments: with the cursor's own hit, 4 pages of 2, newest first.
    new = [46002000 + i for i in range(1, 8)]
    for i, oid in enumerate(new, start=1):
        comment(hn_server, oid, NEWEST["t"] + 60 * i)
    top = NEWEST["t"] + 60 * 7

    # A crashes after the first page; a newer comment then arrives (the walk's upper bound
    # keeps it out of the walk's pages); B publishes the next page and loses its save;
    # C goes on with A's walk: B's page again (deduped), then the rest.
    run = await ingest.restart_midway(
        lambda: hn(hn_server, **cfg), between=lambda: comment(hn_server, 46002100, top + 60)
    )
    # The cursor stays at the old second until the walk is done; the walk is remembered.
    assert run.after_a[FEED] == {
        **NEWEST,
        "walk": {"page": 1, "until": top, "newest": {"t": top, "ids": [str(new[-1])]}},
    }
    assert run.after_b == run.after_a
    assert (run.report.published, run.report.duplicates) == (3, 2)
    assert run.after_c[FEED] == {"t": top, "ids": [str(new[-1])]}
    d = await ingest.poller(hn(hn_server, **cfg)).poll_once()
    assert [m.external_id for m in d.mentions] == ["46002100"] and d.published == 1

    records = await consume(ingest.settings, at_least(10))
    ids = sorted(parse(r).external_id for r in records)
    assert ids == sorted(["46001005", "46001006", *map(str, new), "46002100"])
    walk_filters = [r.arg("numericFilters") for r in hn_server.paths() if r.arg("page") != "0"]
    assert set(walk_filters) == {f"created_at_i>={NEWEST['t']},created_at_i<={top}"}


async def test_429_with_retry_after_and_500_are_retried(hn_server: HackerNewsServer) -> None:
    source = hn(hn_server)
    page = await fx.fetch_after_429_and_500(hn_server, source, FEED, "/api/v1/search_by_date")
    assert [h["objectID"] for h in page.items][-1] == "46001006"
    assert len(hn_server.requests) == 3 == source.health.requests
    await fx.give_up_when_down(hn_server, source, FEED)
    with pytest.raises(SourceError, match="page token"):
        await source.fetch_page(FEED, None, "sideways:1:2")
    await source.aclose()
